"""The server-API port's HTTP/1.1 (docs/api.md), and the WebSocket port's plain HTTP.

* ``router``: the h11 connection loop; sends each request to one of:
* ``operating``: ``/healthz``, ``/readyz``, ``/metrics``;
* ``admin``: the settings page (``/admin``, its files in ``admin_page/``);
* ``api``: the server API's endpoints, ``/v1/apps/<app>/...``;
* ``messages``: the request and response types they share;
* ``static``: the files a plain HTTP request on the WebSocket port gets.

Each takes the server as a small Protocol of what it needs, declared where it is used.
"""
