/* Reconnect-storm load generator for the rtcore bench harness (see bench/README.md).
 *
 * Usage: cstorm HOST PORT N FIRST_FRAMES_HEX SOURCE_IPS
 *
 * Opens N WebSocket clients from SOURCE_IPS loopback addresses (127.0.0.2, 127.0.0.3, ...:
 * Linux routes all of 127/8 to lo, so per-IP limits see SOURCE_IPS distinct clients' IPs).
 * Each client does the upgrade, sends the first frames (hello and join) once the 101 arrives,
 * and is "ready" when its join is acked. A client that is refused (HTTP status other than
 * 101, a close frame, a TCP reset or refusal) retries after a jittered exponential backoff,
 * the Python client's (rtcore/client): a delay drawn uniformly below
 * min(30, 0.5 * 2^(attempt-1)) seconds, the attempt count reset by a client that got ready.
 *
 * Prints "ready SECONDS" once all N are ready, then obeys stdin:
 *   storm    every client is about to lose its connection (the server restarts): once all
 *            have, each reconnects with backoff; prints "recovered SECONDS" once all N
 *            are ready again (SECONDS from the command), then one "refused KIND COUNT" line
 *            per kind of refusal met since the start (close codes, HTTP statuses, "tcp"
 *            for refused or reset TCP connections), then "end"
 *   quit
 * or "error MESSAGE". Setup and recovery each give up after 300 s.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECV 65536
#define KINDS 64

enum { IDLE, CONNECTING, UPGRADING, JOINING, READY };

typedef struct {
    int fd, state, attempt, ip;
    double retry_at;       /* when an IDLE client connects next */
    unsigned char *in;     /* bytes of the current setup not yet parsed */
    size_t in_len;
} client_t;

static unsigned char buf[RECV];
static const char UPGRADE[] =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

static char kind_name[KINDS][16];
static long kind_count[KINDS];
static int nkinds;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    printf("error %s: %s\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

static void refused(const char *kind) {
    for (int i = 0; i < nkinds; i++)
        if (!strcmp(kind_name[i], kind)) {
            kind_count[i]++;
            return;
        }
    if (nkinds < KINDS) {
        snprintf(kind_name[nkinds], sizeof kind_name[0], "%s", kind);
        kind_count[nkinds++] = 1;
    }
}

static int ep, n, nips, ready;
static client_t *clients;
static unsigned char *first;
static int first_len;
static struct sockaddr_in server;

static void backoff(client_t *c) {
    c->attempt++;
    double bound = 0.5 * (double)(1u << (c->attempt - 1 < 16 ? c->attempt - 1 : 16));
    if (bound > 30) bound = 30;
    c->retry_at = now() + bound * ((double)rand() / RAND_MAX);
}

/* The connection ended (refused, reset, or lost once ready): close it, retry later. */
static void drop(client_t *c, const char *why) {
    if (why) refused(why);
    if (c->state == READY) {
        ready--;
        c->attempt = 0; /* got as far as ready: the backoff starts over */
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    c->in = NULL;
    c->in_len = 0;
    c->state = IDLE;
    backoff(c);
}

static void start(client_t *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)c->ip);
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind");
    c->state = CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS)
        drop(c, "tcp");
}

static void send_all(client_t *c, const void *data, size_t len) {
    const char *p = data;
    while (len) { /* setup writes are small: the socket takes them (or the peer is gone) */
        ssize_t k = send(c->fd, p, len, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            drop(c, "tcp");
            return;
        }
        p += k;
        len -= (size_t)k;
    }
}

/* Parse the setup's whole frames: ready on the join's ok; a close frame is a refusal. */
static void frames(client_t *c) {
    size_t pos = 0;
    while (c->in_len - pos >= 2) {
        unsigned char *f = c->in + pos;
        uint64_t len = f[1] & 0x7f, off = 2;
        if (len == 126) {
            if (c->in_len - pos < 4) break;
            len = ((uint64_t)f[2] << 8) | f[3];
            off = 4;
        } else if (len == 127) {
            if (c->in_len - pos < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i];
            off = 10;
        }
        if (c->in_len - pos < off + len) break;
        unsigned char *payload = f + off;
        if ((f[0] & 0x0f) == 8) { /* close: the code names the refusal */
            char code[16];
            snprintf(code, sizeof code, "%d", len >= 2 ? payload[0] << 8 | payload[1] : 1005);
            drop(c, code);
            return;
        }
        if (memmem(payload, len, "\xa1t\xa3" "err", 6)) {
            drop(c, "err");
            return;
        }
        if (memmem(payload, len, "\xa1t\xa2ok", 5)) {
            c->state = READY;
            ready++;
            free(c->in);
            c->in = NULL;
            c->in_len = 0;
            return;
        }
        pos += off + len;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

static void readable(client_t *c) {
    ssize_t got = recv(c->fd, buf, RECV, 0);
    if (got == 0 || (got < 0 && errno != EAGAIN)) {
        drop(c, c->state == READY ? NULL : "tcp");
        return;
    }
    if (got < 0 || c->state == READY) return; /* presence of later joiners: discarded */
    c->in = realloc(c->in, c->in_len + (size_t)got);
    memcpy(c->in + c->in_len, buf, (size_t)got);
    c->in_len += (size_t)got;
    if (c->state == UPGRADING) {
        unsigned char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end) return;
        if (memcmp(c->in, "HTTP/1.1 101", 12) != 0) {
            char status[16] = "http";
            if (c->in_len >= 12) snprintf(status, sizeof status, "http%.3s", c->in + 9);
            drop(c, status);
            return;
        }
        size_t rest = c->in_len - (size_t)(end + 4 - c->in);
        memmove(c->in, end + 4, rest);
        c->in_len = rest;
        c->state = JOINING;
        send_all(c, first, (size_t)first_len);
        if (c->state != JOINING) return;
    }
    frames(c);
}

static void event(client_t *c, uint32_t events) {
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            drop(c, "tcp");
            return;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->state = UPGRADING;
        send_all(c, UPGRADE, sizeof UPGRADE - 1);
        return;
    }
    readable(c);
}

/* Run until all N are ready (or 300 s pass); returns the seconds it took. */
static double until_ready(void) {
    double t0 = now();
    struct epoll_event events[1024];
    while (ready < n) {
        double t = now(), next = t + 0.1;
        if (t - t0 > 300) {
            errno = ETIMEDOUT;
            die("not all clients ready");
        }
        for (int i = 0; i < n; i++) {
            client_t *c = &clients[i];
            if (c->state != IDLE) continue;
            if (c->retry_at <= t) start(c);
            else if (c->retry_at < next) next = c->retry_at;
        }
        int wait_ms = (int)((next - now()) * 1000);
        int k = epoll_wait(ep, events, 1024, wait_ms > 0 ? wait_ms : 0);
        for (int i = 0; i < k; i++) event(events[i].data.ptr, events[i].events);
    }
    return now() - t0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: cstorm HOST PORT N FIRST_FRAMES_HEX SOURCE_IPS\n");
        return 2;
    }
    n = atoi(argv[3]);
    nips = atoi(argv[5]);
    size_t hex_len = strlen(argv[4]) / 2;
    first = malloc(hex_len);
    for (size_t i = 0; i < hex_len; i++) sscanf(argv[4] + 2 * i, "%2hhx", &first[i]);
    first_len = (int)hex_len;
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &server.sin_addr);
    srand(12345);
    ep = epoll_create1(0);
    clients = calloc((size_t)n, sizeof(client_t));
    for (int i = 0; i < n; i++) clients[i].ip = i % nips;
    printf("ready %.6f\n", until_ready());
    fflush(stdout);

    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "quit", 4)) break;
        if (strncmp(line, "storm", 5)) {
            printf("error bad command\n");
            fflush(stdout);
            continue;
        }
        double t0 = now();
        struct epoll_event events[1024];
        while (ready > 0) { /* every connection is lost first (the server goes down) */
            if (now() - t0 > 30) {
                errno = ETIMEDOUT;
                die("the connections were not lost");
            }
            int k = epoll_wait(ep, events, 1024, 100);
            for (int i = 0; i < k; i++) event(events[i].data.ptr, events[i].events);
        }
        until_ready();
        printf("recovered %.6f\n", now() - t0);
        for (int i = 0; i < nkinds; i++) printf("refused %s %ld\n", kind_name[i], kind_count[i]);
        printf("end\n");
        fflush(stdout);
    }
    return 0;
}
