/* rtcore loadtest's C load agent: one load process's share of a plan on an epoll loop, doing
 * what rtcore/loadtest/agent.py and peer.py do (scenarios connect, fanout, chat and storm), with
 * the same counts, so that results of the two agents add up exactly (docs/loadtest.md).
 *
 * Usage: cagent            the plan's share on stdin (rtcore/loadtest/cagent.py writes it):
 *          plan SCENARIO T0 DURATION CONNECT_RATE RATE MESSAGES SIZE SEED
 *          target HOST PORT UPGRADE_REQUEST_HEX        (one a target, in order)
 *          hello HELLO_FRAME_HEX                       (connection i sends hello i % count)
 *          channel NAME                                (one a channel, in order)
 *          conn INDEX TARGET ROLE CHANNEL,CHANNEL,...  (ROLE: m member, p publisher, s sender;
 *                                                       "-": no channels)
 *          end
 *        then commands on stdin, one a line: go (senders start), storm (every connection is
 *        dropped with a TCP reset and reconnects), stop.
 *        Reports on stdout, one JSON object a line: {"kind":"tick",...} every 0.2 s (cumulative
 *        counts, and the latency histogram of the last 0.2 s), {"kind":"final",...} (also
 *        the per-second series) once stopped or at the plan's deadline (DURATION + 5 s), or
 *        {"kind":"error","message":...}. Channels are named by their index in reports.
 *        cagent hist    latencies (seconds, one a line) on stdin; their histogram out, as
 *                       JSON (tests compare it with rtcore/loadtest/stats.py's)
 *        cagent backoff ATTEMPT COUNT   COUNT reconnection delays after attempt ATTEMPT
 *
 * Latencies: a message's data carries its send time "t0" (wall clock, seconds); a receiver
 * puts now - t0 into bucket ceil(log(s / 1e-6) / log(1.02)) (0 at most 1 µs): stats.py's.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECV (256 * 1024)
#define HANDSHAKES 256 /* connections being set up at once, at most (agent.py's) */
#define TICK 0.2
#define NBUCKETS 4096
#define KINDS 64
#define OUT_CAP (1 << 20) /* a sender waits while this much of its writes is unsent */

enum { CLOSED, CONNECTING, UPGRADING, JOINING, READY };
enum { SETUP, GO, STORM, STOP };
static const char *PHASES[] = {"setup", "go", "storm", "stop"};

typedef struct {
    char name[KINDS][48];
    long count[KINDS];
    int n;
} table_t;

typedef struct {
    int used;
    long opened, deliveries, sent, open;
    table_t *refusals, *closes;
    long *hist;
} second_t;

typedef struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    unsigned char *upgrade;
    size_t upgrade_len;
} target_t;

typedef struct {
    unsigned char *data;
    size_t len;
} bytes_t;

typedef struct {
    int index, target, role, nch, *ch;
    int fd, state, joins_left, attempt, connect_failed, writing;
    double retry_at, send_start;
    long sent, outstanding;
    unsigned char *in, *out;
    size_t in_len, in_cap, out_len, out_cap;
} peer_t;

/* the plan */
static char scenario[32];
static double t0_wall, duration, ramp_rate, rate, seed;
static long messages, size;
static target_t *targets;
static int ntargets;
static bytes_t *hellos;
static int nhellos;
static char **channels;
static int nchannels;
static peer_t *peers;
static int npeers;
static bytes_t *send_tpl; /* a send frame per channel: id and t0 patched in */
static size_t *send_id_at, *send_t0_at;

/* the counts (agent.py's) */
static int phase = SETUP, ep;
static double phase_start;
static long started, handshaking, nopen, opened, failed, pending;
static long c_deliveries, c_sent, c_acked, c_refused_requests;
static table_t refusals, closes;
static long *ready_in, *acked_in;
static second_t *seconds;
static long nseconds;
static long recent[NBUCKETS];
static peer_t **queue, **senders;
static int nsenders;
static long q_head, q_len;
static unsigned char rbuf[RECV];
static double log_growth;
static uint64_t rng_state;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f) putchar('?');
        else putchar(c);
    }
    putchar('"');
}

static void fatal(const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s", what, errno ? strerror(errno) : "failed");
    printf("{\"kind\":\"error\",\"message\":");
    json_str(msg);
    printf("}\n");
    fflush(stdout);
    exit(1);
}

static void *grow(void *p, size_t bytes) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) fatal("out of memory");
    return q;
}

/* -- histograms and tables --------------------------------------------------------------- */

static int bucket(double s) {
    if (s <= 1e-6) return 0;
    double k = ceil(log(s / 1e-6) / log_growth);
    return k >= NBUCKETS - 1 ? NBUCKETS - 1 : (int)k;
}

static void print_hist(const long *hist) {
    int first = 1;
    putchar('{');
    for (int k = 0; k < NBUCKETS; k++)
        if (hist[k]) {
            printf("%s\"%d\":%ld", first ? "" : ",", k, hist[k]);
            first = 0;
        }
    putchar('}');
}

static void count(table_t *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->name[i], name)) {
            t->count[i]++;
            return;
        }
    if (t->n < KINDS) {
        snprintf(t->name[t->n], sizeof t->name[0], "%s", name);
        t->count[t->n++] = 1;
    }
}

static void print_table(const table_t *t) {
    putchar('{');
    for (int i = 0; t && i < t->n; i++) {
        if (i) putchar(',');
        json_str(t->name[i]);
        printf(":%ld", t->count[i]);
    }
    putchar('}');
}

static second_t *second(void) {
    long t = (long)(wall() - t0_wall);
    if (t < 0) t = 0;
    if (t >= nseconds) {
        long more = t + 16;
        seconds = grow(seconds, sizeof(second_t) * (size_t)more);
        memset(seconds + nseconds, 0, sizeof(second_t) * (size_t)(more - nseconds));
        nseconds = more;
    }
    seconds[t].used = 1;
    return &seconds[t];
}

static table_t *lazy_table(table_t **t) {
    if (!*t) *t = calloc(1, sizeof(table_t));
    if (!*t) fatal("out of memory");
    return *t;
}

/* -- msgpack, as much as reading the server's frames takes -------------------------------- */

typedef struct {
    const unsigned char *p, *end;
} rd_t;

static int need(rd_t *r, size_t n) { return (size_t)(r->end - r->p) >= n; }

static uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Skip one object; 0 if it is cut short or too deep. */
static int mp_skip(rd_t *r, int depth) {
    if (depth > 64 || !need(r, 1)) return 0;
    unsigned c = *r->p++;
    uint64_t len = 0, items = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return 1;
    if (c >= 0xa0 && c <= 0xbf) len = c & 0x1f;
    else if (c >= 0x90 && c <= 0x9f) items = c & 0x0f;
    else if (c >= 0x80 && c <= 0x8f) items = 2 * (c & 0x0f);
    else {
        static const int fixed[] = {[0xca] = 4, [0xcb] = 8, [0xcc] = 1, [0xcd] = 2, [0xce] = 4,
                                    [0xcf] = 8, [0xd0] = 1, [0xd1] = 2, [0xd2] = 4, [0xd3] = 8,
                                    [0xd4] = 2, [0xd5] = 3, [0xd6] = 5, [0xd7] = 9, [0xd8] = 17};
        static const int sized[] = {[0xc4] = 1, [0xc5] = 2, [0xc6] = 4, [0xc7] = 1, [0xc8] = 2,
                                    [0xc9] = 4, [0xd9] = 1, [0xda] = 2, [0xdb] = 4};
        if (c <= 0xd8 && fixed[c]) len = (uint64_t)fixed[c];
        else if (c <= 0xdb && sized[c]) {
            int n = sized[c];
            if (!need(r, (size_t)n)) return 0;
            len = be(r->p, n) + (c >= 0xc7 && c <= 0xc9); /* ext: a type byte too */
            r->p += n;
        } else if (c == 0xdc || c == 0xdd || c == 0xde || c == 0xdf) {
            int n = (c == 0xdc || c == 0xde) ? 2 : 4;
            if (!need(r, (size_t)n)) return 0;
            items = be(r->p, n) * (c >= 0xde ? 2 : 1);
            r->p += n;
        } else
            return 0;
    }
    if (!need(r, len)) return 0;
    r->p += len;
    for (uint64_t i = 0; i < items; i++)
        if (!mp_skip(r, depth + 1)) return 0;
    return 1;
}

/* A str (its bytes in *s, *n); else the object is skipped and 0 returned. */
static int mp_str(rd_t *r, const unsigned char **s, size_t *n) {
    if (!need(r, 1)) return 0;
    unsigned c = *r->p;
    int head = (c >= 0xa0 && c <= 0xbf) ? 0 : c == 0xd9 ? 1 : c == 0xda ? 2 : c == 0xdb ? 4 : -1;
    if (head < 0 || !need(r, 1 + (size_t)head)) return mp_skip(r, 0) && 0;
    uint64_t len = head ? be(r->p + 1, head) : (c & 0x1f);
    if (!need(r, 1 + (size_t)head + len)) return 0;
    *s = r->p + 1 + head;
    *n = (size_t)len;
    r->p += 1 + head + len;
    return 1;
}

static int mp_int(rd_t *r, int64_t *v) {
    if (!need(r, 1)) return 0;
    unsigned c = *r->p;
    static const int width[] = {[0xcc] = 1, [0xcd] = 2, [0xce] = 4, [0xcf] = 8,
                                [0xd0] = 1, [0xd1] = 2, [0xd2] = 4, [0xd3] = 8};
    if (c <= 0x7f || c >= 0xe0) {
        *v = c <= 0x7f ? (int64_t)c : (int64_t)(int8_t)c;
        r->p++;
        return 1;
    }
    if (c < 0xcc || c > 0xd3 || !need(r, 1 + (size_t)width[c])) return mp_skip(r, 0) && 0;
    uint64_t u = be(r->p + 1, width[c]);
    int bits = 8 * width[c];
    if (c >= 0xd0 && bits < 64 && (u >> (bits - 1))) u |= ~0ULL << bits; /* sign-extend */
    *v = (int64_t)u;
    r->p += 1 + width[c];
    return 1;
}

static int mp_float(rd_t *r, double *v) {
    if (need(r, 9) && *r->p == 0xcb) {
        uint64_t bits = be(r->p + 1, 8);
        memcpy(v, &bits, 8);
        r->p += 9;
        return 1;
    }
    if (need(r, 5) && *r->p == 0xca) {
        uint32_t bits = (uint32_t)be(r->p + 1, 4);
        float f;
        memcpy(&f, &bits, 4);
        *v = f;
        r->p += 5;
        return 1;
    }
    return mp_skip(r, 0) && 0;
}

/* A map's size; 0 (and the object skipped) if it is not a map. */
static int mp_map(rd_t *r, uint64_t *n) {
    if (!need(r, 1)) return 0;
    unsigned c = *r->p;
    if (c >= 0x80 && c <= 0x8f) {
        *n = c & 0x0f;
        r->p++;
        return 1;
    }
    int w = c == 0xde ? 2 : c == 0xdf ? 4 : 0;
    if (!w || !need(r, 1 + (size_t)w)) return mp_skip(r, 0) && 0;
    *n = be(r->p + 1, w);
    r->p += 1 + w;
    return 1;
}

static int is(const unsigned char *s, size_t n, const char *lit) {
    return n == strlen(lit) && !memcmp(s, lit, n);
}

typedef struct {
    const unsigned char *t, *code, *ev;
    size_t t_len, code_len, ev_len;
    int has_id, has_t0, has_code;
    int64_t id;
    double t0;
} msg_t;

/* data's "t0", if data is a map holding a float there */
static int read_t0(rd_t *r, double *t0) {
    uint64_t n;
    int found = 0;
    if (!mp_map(r, &n)) return 0;
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *k;
        size_t kn;
        if (!mp_str(r, &k, &kn)) {
            if (r->p >= r->end || !mp_skip(r, 1)) return 0;
            continue;
        }
        if (is(k, kn, "t0")) found = mp_float(r, t0) || found;
        else if (!mp_skip(r, 1)) return 0;
    }
    return found;
}

static int read_msg(const unsigned char *p, size_t len, msg_t *m) {
    rd_t r = {p, p + len};
    uint64_t n;
    memset(m, 0, sizeof *m);
    if (!mp_map(&r, &n)) return 0;
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *k;
        size_t kn;
        if (!mp_str(&r, &k, &kn)) {
            if (!mp_skip(&r, 1)) return 0;
            continue;
        }
        if (is(k, kn, "t")) mp_str(&r, &m->t, &m->t_len);
        else if (is(k, kn, "ev")) mp_str(&r, &m->ev, &m->ev_len);
        else if (is(k, kn, "code")) m->has_code = mp_str(&r, &m->code, &m->code_len);
        else if (is(k, kn, "id")) m->has_id = mp_int(&r, &m->id);
        else if (is(k, kn, "data")) m->has_t0 = read_t0(&r, &m->t0);
        else if (!mp_skip(&r, 1)) return 0;
    }
    return m->t != NULL;
}

/* -- frames out ---------------------------------------------------------------------------- */

/* A masked client frame (all-zero key) around payload into out; its length. */
static size_t frame(unsigned char *out, int opcode, const unsigned char *payload, size_t n) {
    size_t h = 0;
    out[h++] = (unsigned char)(0x80 | opcode);
    if (n < 126) out[h++] = (unsigned char)(0x80 | n);
    else if (n < 65536) {
        out[h++] = 0x80 | 126;
        out[h++] = (unsigned char)(n >> 8);
        out[h++] = (unsigned char)n;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) out[h++] = (unsigned char)(n >> (8 * i));
    }
    memset(out + h, 0, 4);
    h += 4;
    if (payload) memcpy(out + h, payload, n);
    return h + n;
}

static size_t mp_put_str(unsigned char *o, const char *s, size_t n) {
    size_t h = 0;
    if (n < 32) o[h++] = (unsigned char)(0xa0 | n);
    else if (n < 256) o[h++] = 0xd9, o[h++] = (unsigned char)n;
    else if (n < 65536) o[h++] = 0xda, o[h++] = (unsigned char)(n >> 8), o[h++] = (unsigned char)n;
    else {
        o[h++] = 0xdb;
        for (int i = 3; i >= 0; i--) o[h++] = (unsigned char)(n >> (8 * i));
    }
    if (s) memcpy(o + h, s, n);
    else memset(o + h, 'x', n);
    return h + n;
}

static size_t put_key(unsigned char *o, const char *k) { return mp_put_str(o, k, strlen(k)); }

/* {t: join, id: ID, ch: NAME} */
static size_t join_frame(unsigned char *out, int id, const char *name) {
    unsigned char m[512];
    size_t n = 0;
    m[n++] = 0x83;
    n += put_key(m + n, "t");
    n += put_key(m + n, "join");
    n += put_key(m + n, "id");
    m[n++] = 0xcd, m[n++] = (unsigned char)(id >> 8), m[n++] = (unsigned char)id;
    n += put_key(m + n, "ch");
    n += put_key(m + n, name);
    return frame(out, 0x2, m, n);
}

/* {t: send, id: uint32, ch: NAME, ev: lt, data: {t0: float64, p: "x" * size}, echo: false} */
static void build_send(int c) {
    size_t cap = (size_t)size + strlen(channels[c]) + 128;
    unsigned char *m = grow(NULL, cap), *f = grow(NULL, cap + 16);
    size_t n = 0, id_at, t0_at;
    m[n++] = 0x86;
    n += put_key(m + n, "t");
    n += put_key(m + n, "send");
    n += put_key(m + n, "id");
    id_at = n, m[n++] = 0xce, n += 4;
    n += put_key(m + n, "ch");
    n += put_key(m + n, channels[c]);
    n += put_key(m + n, "ev");
    n += put_key(m + n, "lt");
    n += put_key(m + n, "data");
    m[n++] = 0x82;
    n += put_key(m + n, "t0");
    t0_at = n, m[n++] = 0xcb, n += 8;
    n += put_key(m + n, "p");
    n += mp_put_str(m + n, NULL, (size_t)size);
    n += put_key(m + n, "echo");
    m[n++] = 0xc2;
    size_t len = frame(f, 0x2, m, n), head = len - n;
    send_tpl[c] = (bytes_t){f, len};
    send_id_at[c] = head + id_at + 1;
    send_t0_at[c] = head + t0_at + 1;
    free(m);
}

/* -- one connection (peer.py) ---------------------------------------------------------------- */

static void lost(peer_t *p, const char *why, int was_ready);

static void close_peer(peer_t *p, int reset) {
    if (p->fd >= 0) {
        if (reset) {
            struct linger l = {1, 0};
            setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        close(p->fd);
    }
    p->fd = -1;
    p->state = CLOSED;
    p->in_len = p->out_len = 0;
    p->writing = 0;
}

static void fail(peer_t *p, const char *why) {
    lost(p, why, p->state == READY);
    close_peer(p, 0);
}

static void watch(peer_t *p, int writing) {
    if (p->writing == writing) return;
    struct epoll_event ev = {.events = EPOLLIN | (writing ? EPOLLOUT : 0), .data.ptr = p};
    epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
    p->writing = writing;
}

/* Write what is queued; 0 if the connection failed. */
static int flush(peer_t *p) {
    while (p->out_len) {
        ssize_t k = send(p->fd, p->out, p->out_len, MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) break;
        if (k <= 0) {
            fail(p, "tcp");
            return 0;
        }
        memmove(p->out, p->out + k, p->out_len - (size_t)k);
        p->out_len -= (size_t)k;
    }
    watch(p, p->out_len > 0);
    return 1;
}

/* Queue data and write what the socket takes; 0 if the connection failed. */
static int put(peer_t *p, const unsigned char *data, size_t n) {
    if (p->out_len + n > p->out_cap) {
        p->out_cap = 2 * (p->out_len + n);
        p->out = grow(p->out, p->out_cap);
    }
    memcpy(p->out + p->out_len, data, n);
    p->out_len += n;
    return flush(p);
}

static void start(peer_t *p) {
    target_t *t = &targets[p->target];
    p->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (p->fd < 0) fatal("socket (raise the open-files limit, ulimit -n, or add --workers)");
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(p->fd, (struct sockaddr *)&t->addr, t->addrlen);
    p->connect_failed = rc < 0 && errno != EINPROGRESS;
    p->state = CONNECTING;
    p->in_len = p->out_len = 0;
    p->attempt++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = p};
    epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev);
    p->writing = 1;
}

static int receives(const peer_t *p) { return p->role != 'p'; }

static void ready(peer_t *p) {
    p->state = READY;
    p->attempt = 0;
    handshaking--;
    nopen++;
    opened++;
    second()->opened++;
    if (receives(p))
        for (int i = 0; i < p->nch; i++) ready_in[p->ch[i]]++;
}

static void enqueue(peer_t *p) { queue[(q_head + q_len++) % npeers] = p; }

static double uniform(double hi) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return hi * (double)(rng_state >> 11) / 9007199254740992.0;
}

/* The Python client's delay after a failed attempt: uniform below min(30, 0.5 * 2^(a-1)). */
static double backoff(int attempt) {
    int e = attempt - 1 < 0 ? 0 : attempt - 1 > 16 ? 16 : attempt - 1;
    double bound = 0.5 * (double)(1 << e);
    return uniform(bound < 30 ? bound : 30);
}

static void lost(peer_t *p, const char *why, int was_ready) {
    if (was_ready) {
        nopen--;
        count(&closes, why);
        count(lazy_table(&second()->closes), why);
        if (receives(p))
            for (int i = 0; i < p->nch; i++) ready_in[p->ch[i]]--;
    } else {
        handshaking--;
        count(&refusals, why);
        count(lazy_table(&second()->refusals), why);
    }
    pending -= p->outstanding; /* no reply will come */
    p->outstanding = 0;
    if (phase == STORM) {
        p->retry_at = mono() + backoff(p->attempt);
        enqueue(p);
    } else if (!was_ready)
        failed++;
}

static void delivered(const msg_t *m) {
    c_deliveries++;
    second_t *s = second();
    s->deliveries++;
    if (!m->has_t0) return;
    double latency = wall() - m->t0;
    if (latency != latency) return; /* NaN: no sample */
    int k = bucket(latency);
    if (!s->hist) s->hist = calloc(NBUCKETS, sizeof(long));
    if (!s->hist) fatal("out of memory");
    s->hist[k]++;
    recent[k]++;
}

static void on_ok(peer_t *p, const msg_t *m) {
    if (m->has_id && m->id <= p->nch && p->state == JOINING) {
        if (--p->joins_left == 0) ready(p);
    } else if (m->has_id && m->id > 100 && m->id <= 100 + p->sent && p->outstanding > 0) {
        p->outstanding--;
        pending--;
        c_acked++;
        acked_in[p->ch[(m->id - 101) % p->nch]]++;
    }
}

static void on_err(peer_t *p, const msg_t *m) {
    char code[64] = "None";
    if (m->has_code) snprintf(code, sizeof code, "%.*s", (int)m->code_len, (const char *)m->code);
    char why[80];
    snprintf(why, sizeof why, "err %s", code);
    if (p->state == JOINING) {
        fail(p, why);
        return;
    }
    if (m->has_id && m->id > 100 && m->id <= 100 + p->sent && p->outstanding > 0) {
        p->outstanding--;
        pending--;
    }
    c_refused_requests++;
    count(&refusals, why);
    count(lazy_table(&second()->refusals), why);
}

static void on_frame(peer_t *p, int opcode, const unsigned char *payload, size_t n) {
    if (opcode == 0x8) {
        char why[32];
        snprintf(why, sizeof why, "close %d", n >= 2 ? payload[0] << 8 | payload[1] : 1005);
        fail(p, why);
    } else if (opcode == 0x9) {
        unsigned char pong[256];
        put(p, pong, frame(pong, 0xA, payload, n < 125 ? n : 125)); /* the heartbeat */
    } else if (opcode == 0x2) {
        msg_t m;
        if (!read_msg(payload, n, &m)) return;
        if (is(m.t, m.t_len, "msg")) {
            if (m.ev && is(m.ev, m.ev_len, "lt") && receives(p)) delivered(&m);
        } else if (is(m.t, m.t_len, "ok")) on_ok(p, &m);
        else if (is(m.t, m.t_len, "err")) on_err(p, &m);
        else if (is(m.t, m.t_len, "welcome") && p->state == JOINING && p->joins_left == 0)
            ready(p);
    }
}

/* The 101 arrived: hello and joins (pipelined). 0 if the connection failed. */
static int upgraded(peer_t *p) {
    bytes_t *h = &hellos[p->index % nhellos];
    if (!put(p, h->data, h->len)) return 0;
    p->joins_left = p->nch;
    for (int i = 0; i < p->nch; i++) {
        unsigned char f[600];
        if (!put(p, f, join_frame(f, i + 1, channels[p->ch[i]]))) return 0;
    }
    return 1;
}

/* Whole frames of the input; the rest stays. */
static void frames(peer_t *p) {
    size_t pos = 0;
    while (p->state != CLOSED && p->in_len - pos >= 2) {
        unsigned char *f = p->in + pos;
        uint64_t len = f[1] & 0x7f, off = 2;
        if (len == 126) {
            if (p->in_len - pos < 4) break;
            len = be(f + 2, 2), off = 4;
        } else if (len == 127) {
            if (p->in_len - pos < 10) break;
            len = be(f + 2, 8), off = 10;
        }
        if (p->in_len - pos < off + len) break;
        pos += off + len;
        on_frame(p, f[0] & 0x0f, f + off, len);
    }
    if (p->state == CLOSED) return;
    memmove(p->in, p->in + pos, p->in_len - pos);
    p->in_len -= pos;
}

static void readable(peer_t *p) {
    ssize_t got = recv(p->fd, rbuf, RECV, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (got <= 0) {
        fail(p, "tcp");
        return;
    }
    if (p->in_len + (size_t)got > p->in_cap) {
        p->in_cap = 2 * (p->in_len + (size_t)got);
        p->in = grow(p->in, p->in_cap);
    }
    memcpy(p->in + p->in_len, rbuf, (size_t)got);
    p->in_len += (size_t)got;
    if (p->state == UPGRADING) {
        unsigned char *end = memmem(p->in, p->in_len, "\r\n\r\n", 4);
        if (!end) return;
        if (p->in_len < 12 || memcmp(p->in, "HTTP/1.1 101", 12)) {
            char why[16] = "http ";
            for (int i = 0; i < 3; i++) {
                unsigned char c = p->in_len > (size_t)(9 + i) ? p->in[9 + i] : '?';
                why[5 + i] = (char)(c >= 0x20 && c < 0x7f ? c : '?');
            }
            fail(p, why);
            return;
        }
        size_t rest = p->in_len - (size_t)(end + 4 - p->in);
        memmove(p->in, end + 4, rest);
        p->in_len = rest;
        p->state = JOINING;
        if (!upgraded(p)) return;
    }
    frames(p);
}

static void event(peer_t *p, uint32_t events) {
    if (p->fd < 0) return;
    if (p->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (p->connect_failed || err) {
            fail(p, "tcp");
            return;
        }
        p->state = UPGRADING;
        watch(p, 0);
        put(p, targets[p->target].upgrade, targets[p->target].upgrade_len);
        return;
    }
    if ((events & EPOLLOUT) && !flush(p)) return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(p);
}

/* -- the loop (agent.py) ----------------------------------------------------------------- */

static void open_due(double now) {
    double allowed = INFINITY;
    if (phase == SETUP && ramp_rate > 0) allowed = ceil((now - phase_start) * ramp_rate) - (double)started;
    for (long i = q_len; i > 0; i--) {
        if (allowed <= 0 || handshaking >= HANDSHAKES) return;
        peer_t *p = queue[q_head];
        q_head = (q_head + 1) % npeers;
        q_len--;
        if (p->retry_at > now) {
            enqueue(p);
            continue;
        }
        start(p);
        started++;
        handshaking++;
        allowed--;
    }
}

static void send_one(peer_t *p, long k, double now_wall) {
    int c = p->ch[k % p->nch];
    bytes_t *t = &send_tpl[c];
    uint32_t id = (uint32_t)(101 + k);
    unsigned char *at = t->data + send_id_at[c];
    for (int i = 0; i < 4; i++) at[i] = (unsigned char)(id >> (24 - 8 * i));
    uint64_t bits;
    memcpy(&bits, &now_wall, 8);
    at = t->data + send_t0_at[c];
    for (int i = 0; i < 8; i++) at[i] = (unsigned char)(bits >> (56 - 8 * i));
    p->sent++;
    p->outstanding++;
    pending++;
    c_sent++;
    second()->sent++;
    put(p, t->data, t->len);
}

static int sends(const peer_t *p) { return p->role == 'p' || p->role == 's'; }

static void send_due(double now) {
    for (int i = 0; i < nsenders; i++) {
        peer_t *p = senders[i];
        if (!sends(p) || p->state != READY || p->sent >= messages || !p->nch) continue;
        if (p->send_start < 0) p->send_start = now + (rate > 0 ? uniform(1 / rate) : 0);
        long due = messages;
        if (rate > 0) {
            double d = floor((now - p->send_start) * rate) + 1;
            if (d < 0) d = 0;
            if (d < (double)due) due = (long)d;
        }
        double w = wall();
        while (p->sent < due && p->state == READY && p->out_len < OUT_CAP) send_one(p, p->sent, w);
    }
}

static void storm(void) {
    phase = STORM;
    phase_start = mono();
    for (int i = 0; i < npeers; i++) {
        peer_t *p = &peers[i];
        if (p->fd >= 0) {
            if (p->state == READY) {
                nopen--;
                if (receives(p))
                    for (int j = 0; j < p->nch; j++) ready_in[p->ch[j]]--;
            } else
                handshaking--;
            close_peer(p, 1);
        }
        pending -= p->outstanding;
        p->outstanding = 0;
        p->attempt = 0;
        p->retry_at = 0;
        queue[i] = p;
    }
    q_head = 0;
    q_len = npeers;
    failed = 0;
}

static char *cmd_buf, *line_buf;
static size_t cmd_len, cmd_cap;

/* The next line of stdin (blocking unless the fd is non-blocking); NULL at its end or when
 * no whole line is there yet. */
static char *next_line(int *eof) {
    for (;;) {
        char *nl = cmd_len ? memchr(cmd_buf, '\n', cmd_len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - cmd_buf);
            line_buf = grow(line_buf, n + 1);
            memcpy(line_buf, cmd_buf, n);
            line_buf[n] = 0;
            memmove(cmd_buf, nl + 1, cmd_len - n - 1);
            cmd_len -= n + 1;
            return line_buf;
        }
        if (cmd_len + 65536 > cmd_cap) {
            cmd_cap = 2 * cmd_len + 65536;
            cmd_buf = grow(cmd_buf, cmd_cap);
        }
        ssize_t k = read(0, cmd_buf + cmd_len, cmd_cap - cmd_len);
        if (k == 0) *eof = 1;
        if (k <= 0) return NULL;
        cmd_len += (size_t)k;
    }
}

static void commands(void) {
    int eof = 0;
    char *line;
    while ((line = next_line(&eof))) {
        if (!strcmp(line, "storm")) storm();
        else if (!strcmp(line, "go") || !strcmp(line, "stop")) {
            phase = line[0] == 'g' ? GO : STOP;
            phase_start = mono();
        }
    }
    if (eof) phase = STOP; /* the driver is gone */
}

/* -- reports ------------------------------------------------------------------------------- */

static void print_channel_counts(const char *key, const long *per_channel) {
    printf(",\"%s\":{", key);
    int first = 1;
    for (int c = 0; c < nchannels; c++)
        if (per_channel[c]) {
            printf("%s\"%d\":%ld", first ? "" : ",", c, per_channel[c]);
            first = 0;
        }
    putchar('}');
}

static void print_counts(void) {
    const char *names[] = {"deliveries", "sent", "acked", "refused_requests"};
    long values[] = {c_deliveries, c_sent, c_acked, c_refused_requests};
    int first = 1;
    printf(",\"counts\":{");
    for (int i = 0; i < 4; i++)
        if (values[i]) {
            printf("%s\"%s\":%ld", first ? "" : ",", names[i], values[i]);
            first = 0;
        }
    putchar('}');
}

static int sends_done(void) {
    for (int i = 0; i < nsenders; i++)
        if (senders[i]->state == READY && senders[i]->sent < messages) return 0;
    return phase == GO && pending == 0;
}

/* Cumulative counts, and the latencies since the last report. */
static void snapshot(const char *kind) {
    second()->open = nopen;
    printf("{\"kind\":\"%s\",\"connections\":%d,\"phase\":\"%s\"", kind, npeers, PHASES[phase]);
    printf(",\"open\":%ld,\"opened\":%ld,\"failed\":%ld", nopen, opened, failed);
    printf(",\"settled\":%s", nopen + failed == npeers && handshaking == 0 ? "true" : "false");
    printf(",\"sends_done\":%s", sends_done() ? "true" : "false");
    print_counts();
    printf(",\"refusals\":");
    print_table(&refusals);
    printf(",\"closes\":");
    print_table(&closes);
    print_channel_counts("ready_in", ready_in);
    print_channel_counts("acked_in", acked_in);
    printf(",\"recent\":");
    print_hist(recent);
    memset(recent, 0, sizeof recent);
}

static void series(void) {
    static const long none[NBUCKETS];
    printf(",\"series\":[");
    int first = 1;
    for (long t = 0; t < nseconds; t++) {
        second_t *s = &seconds[t];
        if (!s->used) continue;
        printf("%s{\"t\":%ld,\"open\":%ld,\"opened\":%ld,\"deliveries\":%ld,\"sent\":%ld",
               first ? "" : ",", t, s->open, s->opened, s->deliveries, s->sent);
        printf(",\"refusals\":");
        print_table(s->refusals);
        printf(",\"closes\":");
        print_table(s->closes);
        printf(",\"latency\":");
        print_hist(s->hist ? s->hist : none);
        putchar('}');
        first = 0;
    }
    putchar(']');
}

/* -- the plan, from stdin ---------------------------------------------------------------- */

static bytes_t unhex(const char *hex) {
    size_t n = strlen(hex) / 2;
    bytes_t b = {grow(NULL, n), n};
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) fatal("bad hex in the plan");
        b.data[i] = (unsigned char)v;
    }
    return b;
}

static void add_target(const char *host, int port, const char *hex) {
    targets = grow(targets, sizeof(target_t) * (size_t)(ntargets + 1));
    target_t *t = &targets[ntargets++];
    memset(t, 0, sizeof *t);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&t->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&t->addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET, v4->sin_port = htons((uint16_t)port);
        t->addrlen = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6, v6->sin6_port = htons((uint16_t)port);
        t->addrlen = sizeof *v6;
    } else {
        errno = EINVAL;
        fatal("a target that is not an IP address");
    }
    bytes_t b = unhex(hex);
    t->upgrade = b.data, t->upgrade_len = b.len;
}

static void add_conn(const char *line) {
    int index, target, used = 0;
    char role;
    if (sscanf(line, "conn %d %d %c %n", &index, &target, &role, &used) != 3 || !used)
        fatal("a bad conn line in the plan");
    if (target < 0 || target >= ntargets) fatal("a conn of an unknown target");
    peers = grow(peers, sizeof(peer_t) * (size_t)(npeers + 1));
    peer_t *p = &peers[npeers++];
    memset(p, 0, sizeof *p);
    *p = (peer_t){.index = index, .target = target, .role = role, .fd = -1, .send_start = -1};
    for (const char *s = line + used; *s && *s != '-';) {
        int c = (int)strtol(s, (char **)&s, 10);
        if (c < 0 || c >= nchannels) fatal("a conn of an unknown channel");
        p->ch = grow(p->ch, sizeof(int) * (size_t)(p->nch + 1));
        p->ch[p->nch++] = c;
        if (*s == ',') s++;
        else break;
    }
}

static void read_plan(void) {
    int eof = 0;
    char *line;
    while ((line = next_line(&eof)) && strcmp(line, "end")) {
        char word[32], host[128], hex[2];
        int port;
        if (sscanf(line, "plan %31s %lf %lf %lf %lf %ld %ld %lf", scenario, &t0_wall, &duration,
                   &ramp_rate, &rate, &messages, &size, &seed) == 8)
            continue;
        if (sscanf(line, "target %127s %d %1s", host, &port, hex) == 3)
            add_target(host, port, strrchr(line, ' ') + 1);
        else if (!strncmp(line, "hello ", 6)) {
            hellos = grow(hellos, sizeof(bytes_t) * (size_t)(nhellos + 1));
            hellos[nhellos++] = unhex(line + 6);
        } else if (!strncmp(line, "channel ", 8)) {
            channels = grow(channels, sizeof(char *) * (size_t)(nchannels + 1));
            channels[nchannels++] = strdup(line + 8);
        } else if (!strncmp(line, "conn ", 5))
            add_conn(line);
        else if (sscanf(line, "%31s", word) == 1) {
            errno = EINVAL;
            fatal("an unknown line in the plan");
        }
    }
    if (!line) fatal("the plan ended without its end line");
    if (!nhellos || !ntargets || !scenario[0]) fatal("the plan lacks its plan, target or hello");
}

static void prepare(void) {
    volatile double growth = 1.02; /* computed at run time, by libm, as Python does */
    log_growth = log(growth);
    rng_state = (uint64_t)seed * 2654435761ULL + 1;
    ready_in = calloc((size_t)nchannels + 1, sizeof(long));
    acked_in = calloc((size_t)nchannels + 1, sizeof(long));
    queue = grow(NULL, sizeof(peer_t *) * (size_t)(npeers + 1));
    senders = grow(NULL, sizeof(peer_t *) * (size_t)(npeers + 1));
    for (int i = 0; i < npeers; i++) {
        enqueue(&peers[i]);
        if (sends(&peers[i])) senders[nsenders++] = &peers[i];
    }
    send_tpl = grow(NULL, sizeof(bytes_t) * (size_t)(nchannels + 1));
    send_id_at = grow(NULL, sizeof(size_t) * (size_t)(nchannels + 1));
    send_t0_at = grow(NULL, sizeof(size_t) * (size_t)(nchannels + 1));
    for (int c = 0; c < nchannels; c++) build_send(c);
    struct rlimit nofile;
    if (!getrlimit(RLIMIT_NOFILE, &nofile) && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
}

/* agent.py's loop: start connections, send what is due, read, report; until stopped or the
 * plan's deadline. */
static void run(void) {
    ep = epoll_create1(0);
    if (ep < 0) fatal("epoll");
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event in = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in);
    static struct epoll_event events[1024];
    phase_start = mono();
    double deadline = phase_start + duration + 5.0, next_tick = 0;
    while (phase != STOP && mono() < deadline) {
        double now = mono();
        open_due(now);
        if (phase == GO) send_due(now);
        int k = epoll_wait(ep, events, 1024, 5);
        for (int i = 0; i < k; i++) {
            if (events[i].data.ptr) event(events[i].data.ptr, events[i].events);
            else commands();
        }
        if (now >= next_tick) {
            next_tick = now + TICK;
            snapshot("tick");
            printf("}\n");
            fflush(stdout);
        }
    }
    for (int i = 0; i < npeers; i++) close_peer(&peers[i], 0);
    snapshot("final");
    struct rusage self;
    getrusage(RUSAGE_SELF, &self);
    printf(",\"cpu\":%.6f", (double)self.ru_utime.tv_sec + self.ru_utime.tv_usec / 1e6 +
                                 (double)self.ru_stime.tv_sec + self.ru_stime.tv_usec / 1e6);
    series();
    printf("}\n");
    fflush(stdout);
}

/* cagent hist: latencies in, their histogram out (stats.py's buckets) */
static int hist_mode(void) {
    volatile double growth = 1.02;
    log_growth = log(growth);
    static long hist[NBUCKETS];
    double s;
    while (scanf("%lf", &s) == 1) hist[bucket(s)]++;
    print_hist(hist);
    putchar('\n');
    return 0;
}

/* cagent backoff ATTEMPT COUNT: COUNT delays after a failed attempt ATTEMPT (for tests) */
static int backoff_mode(int attempt, long n) {
    rng_state = (uint64_t)(wall() * 1e6);
    for (long i = 0; i < n; i++) printf("%.9f\n", backoff(attempt));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "hist")) return hist_mode();
    if (argc == 4 && !strcmp(argv[1], "backoff")) return backoff_mode(atoi(argv[2]), atol(argv[3]));
    if (argc != 1) {
        fprintf(stderr, "usage: cagent  (the plan on stdin; see rtcore/loadtest/cagent.py)\n"
                        "       cagent hist  (latencies on stdin; their histogram out)\n"
                        "       cagent backoff ATTEMPT COUNT  (reconnection delays)\n");
        return 2;
    }
    read_plan();
    prepare();
    run();
    return 0;
}
