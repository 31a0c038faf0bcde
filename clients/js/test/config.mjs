// The rtcore configuration the live tests run against: one app per behaviour under test.

import { SERVER_SECRET, JWT_SECRET } from "./helpers.mjs";

const session = (extra = "") => `
[apps.session]
algorithms = ["HS256"]
secret = "${JWT_SECRET}"
leeway = 0
${extra}`;

export const TEST_CONFIG = `
[server]
default_app = "chat"

[limits]
max_channels = 3
max_profile_bytes = 200
max_members_page = 10
max_message_bytes = 4096
heartbeat_interval = 1.0

[[apps]]
name = "chat"
server_secret = "${SERVER_SECRET}"
${session()}

[[apps.channels]]
pattern = "readonly-*"
join = "anyone"
send = "nobody"

[[apps]]
name = "locked"
[[apps.api_keys]]
key = "pk_test_1"
[[apps.api_keys]]
key = "pk_old"
expires = 2020-01-01T00:00:00Z

[[apps]]
name = "members-only"
session_required = true
${session()}

[[apps]]
name = "limited"
refusals_before_disconnect = 3
[[apps.rate_limits]]
name = "per-minute"
rate = 2
per_seconds = 60
error_message = "At most 2 sends a minute."
scope = "connection"
operations = ["send"]

[[apps]]
name = "off"
enabled = false

[[apps]]
name = "tiny"
max_connections = 1

[[apps]]
name = "expiring"
${session("expire_connections = true")}
`;
