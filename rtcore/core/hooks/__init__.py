"""The app's backend in the loop (sans-IO): what a hook is asked and may answer, the circuit
breaker and the join cache, the signature; the HTTP calls are the trio layer's
(rtcore.server.hooks). docs/hooks.md is the reference."""
