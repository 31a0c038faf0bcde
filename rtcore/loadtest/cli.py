"""``rtcore loadtest`` (also ``python -m rtcore.loadtest``):

rtcore loadtest URL [URL ...] --scenario S [options]    run a load test; JSON + HTML result
rtcore loadtest combine A.json B.json ... --json OUT     add up runs from several machines
rtcore loadtest report RESULT.json --html OUT            draw a result's HTML report again
rtcore loadtest compare BEFORE.json AFTER.json --html OUT  two results side by side, ratios

Exit status: 0 when the run finished with every delivery owed counted, 3 when it ran out of
``--duration`` or deliveries were missing (the result says which), 2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rtcore.loadtest import creds, targets
from rtcore.loadtest import plan as p

MAX_CONNECTIONS = 200_000
MAX_WORKERS = 64
MAX_DURATION = 3600.0
MAX_MESSAGES = 1_000_000
DEFAULTS = {  # scenario: (rate, messages)
    "fanout": (100.0, 100),
    "chat": (1.0, 10),
    "churn": (10.0, 30),
}
TOOLS = ("combine", "report", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtcore loadtest",
        description="Load-test an rtcore deployment (docs/loadtest.md). Also: rtcore loadtest "
        "combine | report | compare (see --help of each).",
    )
    parser.add_argument("urls", nargs="+", metavar="URL", help="ws://host:port[/path], 1 or more")
    parser.add_argument("--scenario", choices=p.SCENARIOS, default="connect")
    parser.add_argument("-n", "--connections", type=int, default=100, help="members (default 100)")
    parser.add_argument("--connect-rate", type=float, default=500.0, help="new connections/s")
    parser.add_argument("--channels", type=int, default=1, help="fanout: channels (max 128)")
    parser.add_argument("--room-size", type=int, default=10, help="chat: members per room")
    parser.add_argument("--churners", type=int, default=1, help="churn: churning connections")
    parser.add_argument(
        "--rate", type=float, help="messages (churn: operations)/s per sender; 0: a burst"
    )
    parser.add_argument("--messages", type=int, help="messages (churn: operations) per sender")
    parser.add_argument("--size", type=int, default=100, help="bytes of padding per message")
    parser.add_argument("--hold", type=float, default=5.0, help="connect: seconds to hold")
    parser.add_argument("--duration", type=float, default=60.0, help="bound on the run, s")
    parser.add_argument("--workers", type=int, default=1, help="load processes")
    _credentials(parser)
    parser.add_argument("--presence-diffs", action="store_true", help="hello asks for them")
    parser.add_argument(
        "--i-own-this-target", action="store_true", help="allow non-loopback targets"
    )
    parser.add_argument("--json", help="result file (default loadtest-SCENARIO.json)")
    parser.add_argument("--html", help="report file (default loadtest-SCENARIO.html)")
    parser.add_argument("--no-html", action="store_true", help="write the JSON only")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _credentials(parser: argparse.ArgumentParser) -> None:
    c = parser.add_argument_group("credentials (protocol.md §3.4)")
    c.add_argument("--app", help="the app to join (default: the server's default app)")
    c.add_argument("--key", help="the app's client API key (development keys; else --key-env)")
    c.add_argument("--key-env", metavar="VAR", help="read the API key from $VAR")
    c.add_argument(
        "--token-secret-env",
        metavar="VAR",
        help="mint session tokens with the app's HS* secret in $VAR",
    )
    c.add_argument(
        "--token-command",
        metavar="CMD",
        help="a shell command printing a session token for $RTCORE_LOADTEST_USER",
    )
    c.add_argument("--users", type=int, default=0, help="distinct users (0: one per connection)")
    c.add_argument("--user-prefix", default="loadtest-", help="user ids: PREFIX0, PREFIX1, ...")
    c.add_argument("--token-ttl", type=float, default=3600.0)
    c.add_argument("--token-algorithm", default="HS256")
    c.add_argument("--token-issuer")
    c.add_argument("--token-audience")


def make_plan(args: argparse.Namespace) -> p.Plan:
    """The plan from the options; raises ValueError, TargetError or CredentialsError."""
    _check_bounds(args)
    found = tuple(targets.parse(url, args.i_own_this_target) for url in args.urls)
    rate, messages = DEFAULTS.get(args.scenario, (0.0, 0))
    conns = p.build_conns(
        args.scenario, args.connections, len(found), args.channels, args.room_size, args.churners
    )
    return p.Plan(
        scenario=args.scenario,
        targets=found,
        conns=conns,
        hello=creds.hello_fields(args.app, args.key, args.key_env, args.presence_diffs),
        tokens=_tokens(args),
        connect_rate=args.connect_rate,
        rate=args.rate if args.rate is not None else rate,
        messages=args.messages if args.messages is not None else messages,
        size=args.size,
        hold=args.hold,
        duration=args.duration,
        workers=args.workers,
    )


def _check_bounds(args: argparse.Namespace) -> None:
    checks = [
        (1 <= args.connections <= MAX_CONNECTIONS, f"--connections: 1 to {MAX_CONNECTIONS:,}"),
        (1 <= args.workers <= MAX_WORKERS, f"--workers: 1 to {MAX_WORKERS}"),
        (0 < args.duration <= MAX_DURATION, f"--duration: above 0, at most {MAX_DURATION:g} s"),
        (1 <= args.channels <= 128, "--channels: 1 to 128 (the publisher joins them all)"),
        (args.room_size >= 2, "--room-size: at least 2"),
        (args.churners >= 1, "--churners: at least 1"),
        (
            args.messages is None or 0 <= args.messages <= MAX_MESSAGES,
            f"--messages: 0 to {MAX_MESSAGES:,}",
        ),
        (args.rate is None or args.rate >= 0, "--rate: 0 (a burst) or more"),
        (args.connect_rate > 0, "--connect-rate: above 0"),
        (0 <= args.size <= 1_000_000, "--size: 0 to 1,000,000 bytes"),
        (args.users >= 0, "--users: 0 (one per connection) or more"),
    ]
    for ok, rule in checks:
        if not ok:
            raise ValueError(rule)
    if args.key and args.key_env:
        raise ValueError("--key and --key-env: give one")
    if args.token_secret_env and args.token_command:
        raise ValueError("--token-secret-env and --token-command: give one")


def _tokens(args: argparse.Namespace) -> tuple[str, ...]:
    if not (args.token_secret_env or args.token_command):
        return ()
    users = creds.user_names(args.users or args.connections + args.churners, args.user_prefix)
    if args.token_command:
        return creds.command_tokens(args.token_command, users)
    return creds.minted_tokens(
        args.token_secret_env,
        users,
        args.token_ttl,
        args.token_algorithm,
        args.token_issuer,
        args.token_audience,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        from rtcore.loadtest import tools

        return tools.main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plan = make_plan(args)
    except (ValueError, targets.TargetError, creds.CredentialsError) as exc:
        print(f"rtcore loadtest: {exc}", file=sys.stderr)
        return 2
    return run(plan, args)


def run(plan: p.Plan, args: argparse.Namespace) -> int:
    from rtcore.loadtest.progress import Progress
    from rtcore.loadtest.runner import LoadError, Run

    progress = Progress(quiet=args.quiet)
    try:
        result = Run(plan, progress).execute()
    except LoadError as exc:
        print(f"rtcore loadtest: {exc}", file=sys.stderr)
        return 1
    json_path = Path(args.json or f"loadtest-{plan.scenario}.json")
    json_path.write_text(json.dumps(result, indent=1))
    progress.done(summary_line(result) + f"\nresult: {json_path}")
    if not args.no_html:
        from rtcore.loadtest import tools

        tools.write_report(result, Path(args.html or f"loadtest-{plan.scenario}.html"))
    return 0 if result["deliveries"]["complete"] and not result["timed_out"] else 3


def summary_line(result: dict[str, Any]) -> str:
    c, d = result["connections"], result["deliveries"]
    refusals = ", ".join(f"{k}: {v}" for k, v in sorted(result["refusals"].items())) or "none"
    state = "timed out" if result["timed_out"] else "done"
    return (
        f"{result['scenario']} {state}: {c['opened']:,} of {c['planned']:,} connections opened; "
        f"deliveries {d['received']:,} of {d['expected']:,} owed; refusals: {refusals}"
    )
