/* Subscriber load generator for the rtcore bench harness (see bench/README.md).
 *
 * Opens N WebSocket connections on an epoll loop, performs the upgrade, sends the given
 * first frames (hello, and join) once the 101 arrives (or, with a fifth argument "pipeline",
 * right behind the upgrade request, as the Python client does), waits until every connection is
 * ready (its join acked, or welcomed when there is no join), then obeys commands on stdin:
 *
 *   quiesce                          read and discard until 300 ms pass with no data
 *   count EXPECTED TIMEOUT_S SAMPLE  count server frames until EXPECTED in total; every
 *                                    SAMPLE-th frame that lies whole in one read is searched
 *                                    for the publisher's "t0" float (CLOCK_MONOTONIC seconds)
 *                                    to give a latency sample; pings are answered
 *                                    with pongs and not counted
 *   quit
 *
 * Answers are single lines on stdout: "ready SECONDS", "quiet BYTES",
 * "counted TOTAL FIRST LAST CLOSED MINPEER NSAMPLES" then NSAMPLES lines "LATENCY WHEN"
 * (seconds; WHEN is the CLOCK_MONOTONIC time the sample was read), or
 * "error MESSAGE". Frames are counted from their headers; payloads are not decoded.
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

#define RECV 262144
#define WINDOW 256

typedef struct {
    int fd, http_done, ready;
    uint64_t skip;          /* payload bytes of the current frame still to come */
    unsigned char hdr[16];  /* a frame header split across reads */
    int hdr_len;
    unsigned char *setup;   /* setup-phase bytes not yet parsed */
    size_t setup_len;
    long count;
} peer_t;

static unsigned char buf[RECV + 32];
static const char UPGRADE[] =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

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

static void send_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            die("send");
        }
        p += n;
        len -= (size_t)n;
    }
}

static int unhex(const char *hex, unsigned char **out) {
    size_t n = strlen(hex) / 2;
    *out = malloc(n);
    for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &(*out)[i]);
    return (int)n;
}

/* Parse whole frames of the setup phase; returns 1 when the peer became ready. */
static int setup_frames(peer_t *p, int want_join) {
    size_t pos = 0;
    while (p->setup_len - pos >= 2) {
        unsigned char *f = p->setup + pos;
        uint64_t len = f[1] & 0x7f, off = 2;
        if (len == 126) {
            if (p->setup_len - pos < 4) break;
            len = ((uint64_t)f[2] << 8) | f[3];
            off = 4;
        } else if (len == 127) {
            if (p->setup_len - pos < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i];
            off = 10;
        }
        if (p->setup_len - pos < off + len) break;
        unsigned char *payload = f + off;
        if (memmem(payload, len, "\xa1t\xa3" "err", 6)) {
            errno = EPROTO;
            die("setup refused by the server");
        }
        if (!want_join && memmem(payload, len, "\xa1t\xa7welcome", 10)) p->ready = 1;
        if (want_join && memmem(payload, len, "\xa1t\xa2ok", 5)) p->ready = 1;
        pos += off + len;
    }
    memmove(p->setup, p->setup + pos, p->setup_len - pos);
    p->setup_len -= pos;
    return p->ready;
}

/* Count frames in data; optionally sample latencies. */
/* A server ping lying whole in one read: answer with a pong echoing its payload (masked with
 * the all-zero key); a ping split across reads goes unanswered (the next one is whole). */
static void pong(peer_t *p, const unsigned char *payload, uint64_t plen) {
    unsigned char out[6 + 125] = {0x8a, (unsigned char)(0x80 | plen), 0, 0, 0, 0};
    memcpy(out + 6, payload, (size_t)plen);
    ssize_t w = write(p->fd, out, 6 + (size_t)plen);
    (void)w; /* a full socket or a gone peer: the server's heartbeat decides */
}

static long count_frames(peer_t *p, unsigned char *data, size_t len, double t, long *seen,
                         long sample, double *samples, long *nsamples, long cap) {
    long n = 0;
    size_t pos = 0;
    if (p->skip >= len) {
        p->skip -= len;
        return 0;
    }
    pos = p->skip;
    p->skip = 0;
    while (pos < len) {
        if (len - pos < 2) goto partial;
        unsigned char *f = data + pos;
        uint64_t plen = f[1] & 0x7f, off = 2;
        if (plen == 126) {
            if (len - pos < 4) goto partial;
            plen = ((uint64_t)f[2] << 8) | f[3];
            off = 4;
        } else if (plen == 127) {
            if (len - pos < 10) goto partial;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | f[2 + i];
            off = 10;
        }
        if ((f[0] & 0x0f) == 0x9) { /* a ping: not a delivery */
            if (plen <= 125 && pos + off + plen <= len) pong(p, f + off, plen);
        } else {
            n++;
            (*seen)++;
        }
        if ((f[0] & 0x0f) != 0x9 && sample && *seen % sample == 0 && pos + off + plen <= len && *nsamples < cap) {
            unsigned char *k = memmem(f + off, plen, "\xa2t0\xcb", 4);
            if (k && k + 12 <= f + off + plen) {
                uint64_t bits = 0;
                for (int i = 0; i < 8; i++) bits = (bits << 8) | k[4 + i];
                double t0;
                memcpy(&t0, &bits, 8);
                samples[2 * *nsamples] = t - t0;
                samples[2 * (*nsamples)++ + 1] = t;
            }
        }
        if (pos + off + plen > len) {
            p->skip = pos + off + plen - len;
            return n;
        }
        pos += off + plen;
    }
    return n;
partial:
    p->hdr_len = (int)(len - pos);
    memcpy(p->hdr, data + pos, (size_t)p->hdr_len);
    return n;
}

int main(int argc, char **argv) {
    if (argc != 5 && !(argc == 6 && !strcmp(argv[5], "pipeline"))) {
        fprintf(stderr, "usage: csub HOST PORT N FIRST_FRAMES_HEX [pipeline]\n");
        return 2;
    }
    int pipeline = argc == 6;
    int n = atoi(argv[3]);
    unsigned char *first;
    int first_len = unhex(argv[4], &first);
    int want_join = memmem(first, (size_t)first_len, "\xa4join", 5) != NULL;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    peer_t *peers = calloc((size_t)n, sizeof(peer_t));
    int ep = epoll_create1(0);
    double start = now();
    int opened = 0, ready = 0, inflight = 0;
    struct epoll_event events[1024];

    while (ready < n) {
        while (inflight < WINDOW && opened < n) {
            peer_t *p = &peers[opened++];
            p->fd = socket(AF_INET, SOCK_STREAM, 0);
            if (p->fd < 0) die("socket");
            int one = 1;
            setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (connect(p->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
            if (pipeline) {
                unsigned char both[sizeof UPGRADE + 4096];
                if ((size_t)first_len > 4096) die("first frames too long to pipeline");
                memcpy(both, UPGRADE, sizeof UPGRADE - 1);
                memcpy(both + sizeof UPGRADE - 1, first, (size_t)first_len);
                send_all(p->fd, both, sizeof UPGRADE - 1 + (size_t)first_len);
            } else {
                send_all(p->fd, UPGRADE, sizeof UPGRADE - 1);
            }
            fcntl(p->fd, F_SETFL, O_NONBLOCK);
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};
            epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev);
            inflight++;
        }
        int k = epoll_wait(ep, events, 1024, 1000);
        if (now() - start > 300) {
            errno = ETIMEDOUT;
            die("setup");
        }
        for (int i = 0; i < k; i++) {
            peer_t *p = events[i].data.ptr;
            ssize_t got = recv(p->fd, buf, RECV, 0);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                errno = ECONNRESET;
                die("server closed a connection during setup");
            }
            if (p->ready) continue; /* presence of later joiners */
            p->setup = realloc(p->setup, p->setup_len + (size_t)got);
            memcpy(p->setup + p->setup_len, buf, (size_t)got);
            p->setup_len += (size_t)got;
            if (!p->http_done) {
                unsigned char *end = memmem(p->setup, p->setup_len, "\r\n\r\n", 4);
                if (!end) continue;
                if (memcmp(p->setup, "HTTP/1.1 101", 12) != 0) {
                    errno = EPROTO;
                    die("upgrade refused");
                }
                p->http_done = 1;
                size_t rest = p->setup_len - (size_t)(end + 4 - p->setup);
                memmove(p->setup, end + 4, rest);
                p->setup_len = rest;
                if (!pipeline) send_all(p->fd, first, (size_t)first_len);
            }
            if (setup_frames(p, want_join)) {
                ready++;
                inflight--;
                free(p->setup);
                p->setup = NULL;
            }
        }
    }
    printf("ready %.6f\n", now() - start);
    fflush(stdout);

    char line[256];
    long cap = 2000000;
    double *samples = malloc(2 * sizeof(double) * (size_t)cap); /* (latency, when) pairs */
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "quit", 4)) break;
        if (!strncmp(line, "quiesce", 7)) {
            long total = 0;
            for (;;) {
                int k = epoll_wait(ep, events, 1024, 300);
                if (k <= 0) break;
                for (int i = 0; i < k; i++) {
                    peer_t *p = events[i].data.ptr;
                    ssize_t got = recv(p->fd, buf, RECV, 0);
                    if (got > 0) total += got;
                }
            }
            for (int i = 0; i < n; i++) peers[i].skip = 0, peers[i].hdr_len = 0, peers[i].count = 0;
            printf("quiet %ld\n", total);
            fflush(stdout);
            continue;
        }
        long expected, sample;
        double timeout;
        if (sscanf(line, "count %ld %lf %ld", &expected, &timeout, &sample) != 3) {
            printf("error bad command\n");
            fflush(stdout);
            continue;
        }
        long total = 0, seen = 0, nsamples = 0, closed = 0;
        double first_t = 0, last_t = 0, deadline = now() + timeout;
        while (total < expected && now() < deadline) {
            int k = epoll_wait(ep, events, 1024, 200);
            double t = now();
            for (int i = 0; i < k; i++) {
                peer_t *p = events[i].data.ptr;
                unsigned char *data = buf + 16;
                ssize_t got = recv(p->fd, data, RECV, 0);
                if (got <= 0) {
                    if (got < 0 && errno == EAGAIN) continue;
                    closed++;
                    epoll_ctl(ep, EPOLL_CTL_DEL, p->fd, NULL);
                    continue;
                }
                size_t len = (size_t)got;
                if (p->hdr_len) { /* prepend the split header */
                    data -= p->hdr_len;
                    memcpy(data, p->hdr, (size_t)p->hdr_len);
                    len += (size_t)p->hdr_len;
                    p->hdr_len = 0;
                }
                long c = count_frames(p, data, len, t, &seen, sample, samples, &nsamples, cap);
                if (c) {
                    if (!total) first_t = t;
                    total += c;
                    p->count += c;
                    last_t = t;
                }
            }
        }
        long minpeer = n ? peers[0].count : 0;
        for (int i = 1; i < n; i++)
            if (peers[i].count < minpeer) minpeer = peers[i].count;
        printf("counted %ld %.6f %.6f %ld %ld %ld\n", total, first_t, last_t, closed, minpeer, nsamples);
        for (long i = 0; i < nsamples; i++) printf("%.7f %.6f\n", samples[2 * i], samples[2 * i + 1]);
        fflush(stdout);
    }
    return 0;
}
