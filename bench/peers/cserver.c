/* The C fan-out ceiling of `python -m bench` (server `c-ceiling`; bench/README.md, issue 22).
 *
 * "The machine's limit": one thread, one epoll loop, non-blocking sockets, and no work per
 * request beyond what the protocol needs. It speaks the subset of protocol.md the bench's load
 * clients use: the WebSocket upgrade (hello and join may follow the request in the same write),
 * hello -> welcome, join -> ok, leave -> ok, send -> a `msg` to the channel's members (the
 * sender gets its own copy only with echo on) and an ok with the recipients. No presence.
 *
 * Replies are written from fixed frame shapes (the request's own msgpack bytes for id, ch, ev
 * and data are copied in, never decoded further); the `msg` frames of one read are appended to
 * their channel's batch, and after the read each batch goes to every member in one send():
 * the same bytes for all (as bench/rawfanout.py does). Bytes the kernel does not take are kept
 * per connection up to OUTBOUND_CAP (1 MiB, rtcore's bench setting), past which the connection
 * is dropped, as rtcore drops a slow consumer.
 *
 * Sec-WebSocket-Accept needs SHA-1: the small SHA-1 below (FIPS 180-4), not OpenSSL, so that
 * it builds with a bare `cc` (no OpenSSL headers, no libcrypto soname to find); two 64-byte
 * blocks per handshake, well under a microsecond.
 *
 * Not spoken (answered, never ignored): fragmented or text messages (close 1003), other
 * request types (err unknown_type), messages over 1 MiB (close 1009).
 *
 * Usage: cserver HOST PORT; prints "PORT <n>" once listening and runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECV 262144
#define MAX_MESSAGE (1 << 20)
#define MAX_REQUEST_HEAD 8192
#define OUTBOUND_CAP (1 << 20)
#define BUCKETS 4096

typedef struct {
    unsigned char *p;
    size_t len, cap;
} buf_t;

typedef struct channel channel_t;

typedef struct conn {
    int fd, upgraded, welcomed, echo, dead, want_out;
    char id[12];
    buf_t in, out;
    channel_t **chans;
    int nchans, capchans;
    struct conn *next_dead;
} conn_t;

struct channel {
    unsigned char *name; /* the msgpack str (header included), copied into msg frames */
    size_t name_len;
    conn_t **members;
    int n, cap, pending;
    buf_t batch;        /* msg frames of the current read, for every member but `from` */
    conn_t *from;
    channel_t *next;    /* bucket chain */
    channel_t *next_pending;
};

static channel_t *buckets[BUCKETS];
static channel_t *pending;
static conn_t *dead;
static buf_t rep, scratch;
static unsigned char rbuf[RECV];
static int ep;
static uint64_t conns_made, mids, now_ms;

static void die(const char *what) {
    fprintf(stderr, "cserver: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void put(buf_t *b, const void *d, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) die("realloc");
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void release(buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- SHA-1 and base64, for Sec-WebSocket-Accept ---- */

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void sha1_block(uint32_t h[5], const unsigned char *b) {
    uint32_t w[80], a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (bb & c) | (~bb & d), k = 0x5A827999;
        else if (i < 40) f = bb ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60) f = (bb & c) | (bb & d) | (c & d), k = 0x8F1BBCDC;
        else f = bb ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = ROL(a, 5) + f + e + k + w[i];
        e = d, d = c, c = ROL(bb, 30), bb = a, a = t;
    }
    h[0] += a, h[1] += bb, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const unsigned char *msg, size_t n, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    unsigned char block[64];
    size_t i = 0;
    for (; n - i >= 64; i += 64) sha1_block(h, msg + i);
    size_t rest = n - i;
    memset(block, 0, 64);
    memcpy(block, msg + i, rest);
    block[rest] = 0x80;
    if (rest >= 56) {
        sha1_block(h, block);
        memset(block, 0, 64);
    }
    uint64_t bits = (uint64_t)n * 8;
    for (int j = 0; j < 8; j++) block[63 - j] = (unsigned char)(bits >> (8 * j));
    sha1_block(h, block);
    for (int j = 0; j < 20; j++) out[j] = (unsigned char)(h[j / 4] >> (24 - 8 * (j % 4)));
}

static void base64(const unsigned char *in, size_t n, char *out) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = A[v >> 18 & 63];
        out[o++] = A[v >> 12 & 63];
        out[o++] = i + 1 < n ? A[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? A[v & 63] : '=';
    }
    out[o] = 0;
}

/* ---- output ---- */

static void kill_conn(conn_t *c) {
    if (c->dead) return;
    c->dead = 1;
    c->next_dead = dead;
    dead = c;
}

static void want_out(conn_t *c, int on) {
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* Hand bytes to the kernel; keep what it does not take (up to OUTBOUND_CAP). */
static void conn_write(conn_t *c, const unsigned char *p, size_t n) {
    if (c->dead || !n) return;
    if (!c->out.len) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno != EAGAIN && errno != EINTR) return kill_conn(c);
        if (k > 0) p += k, n -= (size_t)k;
        if (!n) return;
    }
    if (c->out.len + n > OUTBOUND_CAP) return kill_conn(c); /* a slow consumer */
    put(&c->out, p, n);
    if (!c->want_out) want_out(c, 1);
}

static void drain(conn_t *c) {
    ssize_t k = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
    if (k < 0) {
        if (errno != EAGAIN && errno != EINTR) kill_conn(c);
        return;
    }
    memmove(c->out.p, c->out.p + k, c->out.len - (size_t)k);
    c->out.len -= (size_t)k;
    if (!c->out.len) {
        release(&c->out);
        want_out(c, 0);
    }
}

/* A server frame (final, binary unless told) around payload p. */
static void frame(buf_t *b, int opcode, const void *p, size_t n) {
    unsigned char h[10] = {(unsigned char)(0x80 | opcode)};
    size_t hl = 2;
    if (n < 126) h[1] = (unsigned char)n;
    else if (n < 65536) h[1] = 126, h[2] = (unsigned char)(n >> 8), h[3] = (unsigned char)n, hl = 4;
    else {
        h[1] = 127, hl = 10;
        for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
    }
    put(b, h, hl);
    put(b, p, n);
}

static void close_with(conn_t *c, int code, const char *reason) {
    unsigned char payload[125] = {(unsigned char)(code >> 8), (unsigned char)code};
    size_t n = strlen(reason) > 120 ? 120 : strlen(reason);
    memcpy(payload + 2, reason, n);
    frame(&rep, 0x8, payload, n + 2);
    conn_write(c, rep.p, rep.len);
    rep.len = 0;
    kill_conn(c);
}

/* ---- msgpack: just enough to find a request's fields ---- */

/* Bytes of the object at p (or 0: incomplete or not msgpack). */
static size_t mp_size(const unsigned char *p, size_t n, int depth) {
    if (!n || depth > 64) return 0;
    unsigned b = p[0];
    size_t head = 1, len = 0, items = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 1;
    if ((b & 0xe0) == 0xa0) len = b & 0x1f;
    else if ((b & 0xf0) == 0x90) items = b & 0x0f;
    else if ((b & 0xf0) == 0x80) items = 2 * (b & 0x0f);
    else {
        static const unsigned char fixed[] = {[0xca - 0xc4] = 4, [0xcb - 0xc4] = 8, [0xcc - 0xc4] = 1,
            [0xcd - 0xc4] = 2, [0xce - 0xc4] = 4, [0xcf - 0xc4] = 8, [0xd0 - 0xc4] = 1, [0xd1 - 0xc4] = 2,
            [0xd2 - 0xc4] = 4, [0xd3 - 0xc4] = 8, [0xd4 - 0xc4] = 2, [0xd5 - 0xc4] = 3, [0xd6 - 0xc4] = 5,
            [0xd7 - 0xc4] = 9, [0xd8 - 0xc4] = 17};
        if (b >= 0xca && b <= 0xd8) return (size_t)fixed[b - 0xc4] + 1 <= n ? (size_t)fixed[b - 0xc4] + 1 : 0;
        int w = (b == 0xc4 || b == 0xc7 || b == 0xd9) ? 1 : (b == 0xc5 || b == 0xc8 || b == 0xda || b == 0xdc || b == 0xde) ? 2
              : (b == 0xc6 || b == 0xc9 || b == 0xdb || b == 0xdd || b == 0xdf) ? 4 : 0;
        if (!w || n < 1 + (size_t)w) return 0;
        for (int i = 0; i < w; i++) len = len << 8 | p[1 + i];
        head = 1 + (size_t)w;
        if (b >= 0xc7 && b <= 0xc9) head++; /* ext: its type byte */
        if (b == 0xdc || b == 0xdd) items = len, len = 0;
        if (b == 0xde || b == 0xdf) items = 2 * len, len = 0;
    }
    if (head + len > n) return 0;
    size_t pos = head + len;
    for (size_t i = 0; i < items; i++) {
        size_t k = mp_size(p + pos, n - pos, depth + 1);
        if (!k) return 0;
        pos += k;
    }
    return pos;
}

/* A str's bytes (and length), or NULL. */
static const unsigned char *mp_str(const unsigned char *p, size_t n, size_t *len) {
    if (!p || !n) return NULL;
    if ((p[0] & 0xe0) == 0xa0) return *len = p[0] & 0x1f, p + 1;
    if (p[0] == 0xd9 && n >= 2) return *len = p[1], p + 2;
    if (p[0] == 0xda && n >= 3) return *len = (size_t)p[1] << 8 | p[2], p + 3;
    return NULL;
}

static int is_int(const unsigned char *p) {
    return p && (p[0] <= 0x7f || p[0] >= 0xe0 || (p[0] >= 0xcc && p[0] <= 0xd3));
}

typedef struct { const unsigned char *v; size_t n; } field_t;
enum { F_T, F_V, F_ID, F_CH, F_EV, F_DATA, F_ECHO, NFIELDS };
static const char *const NAMES[NFIELDS] = {"t", "v", "id", "ch", "ev", "data", "echo"};

/* The request's fields; 0 if it is not a msgpack map with a string t. */
static int parse(const unsigned char *p, size_t n, field_t f[NFIELDS]) {
    memset(f, 0, sizeof(field_t) * NFIELDS);
    if (mp_size(p, n, 0) != n) return 0;
    size_t items, pos;
    if ((p[0] & 0xf0) == 0x80) items = p[0] & 0x0f, pos = 1;
    else if (p[0] == 0xde) items = (size_t)p[1] << 8 | p[2], pos = 3;
    else if (p[0] == 0xdf) items = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4], pos = 5;
    else return 0;
    for (size_t i = 0; i < items; i++) {
        size_t kn = mp_size(p + pos, n - pos, 1), klen;
        const unsigned char *key = mp_str(p + pos, kn, &klen);
        pos += kn;
        size_t vn = mp_size(p + pos, n - pos, 1);
        for (int j = 0; key && j < NFIELDS; j++)
            if (strlen(NAMES[j]) == klen && !memcmp(key, NAMES[j], klen)) f[j].v = p + pos, f[j].n = vn;
        pos += vn;
    }
    size_t tl;
    return mp_str(f[F_T].v, f[F_T].n, &tl) != NULL;
}

static int t_is(field_t *f, const char *t) {
    size_t n = 0;
    const unsigned char *s = mp_str(f[F_T].v, f[F_T].n, &n);
    return s && n == strlen(t) && !memcmp(s, t, n);
}

/* ---- msgpack out: fixed shapes ---- */

#define LIT(b, s) put(b, s, sizeof s - 1)

static void mp_u64(buf_t *b, uint64_t v) {
    unsigned char x[9] = {0xcf};
    for (int i = 0; i < 8; i++) x[1 + i] = (unsigned char)(v >> (56 - 8 * i));
    put(b, x, 9);
}

static void mp_uint(buf_t *b, uint64_t v) {
    if (v < 128) { unsigned char x = (unsigned char)v; put(b, &x, 1); }
    else if (v < 65536) { unsigned char x[3] = {0xcd, (unsigned char)(v >> 8), (unsigned char)v}; put(b, x, 3); }
    else mp_u64(b, v);
}

static void err(conn_t *c, field_t *f, const char *code, const char *message) {
    (void)c;
    scratch.len = 0;
    LIT(&scratch, "\x84\xa1t\xa3" "err\xa2id");
    if (is_int(f[F_ID].v)) put(&scratch, f[F_ID].v, f[F_ID].n);
    else LIT(&scratch, "\xc0");
    unsigned char h[2] = {0xa4, 0};
    put(&scratch, h, 1);
    LIT(&scratch, "code");
    h[0] = (unsigned char)(0xa0 | strlen(code));
    put(&scratch, h, 1);
    put(&scratch, code, strlen(code));
    LIT(&scratch, "\xa7message\xd9");
    h[0] = (unsigned char)strlen(message);
    put(&scratch, h, 1);
    put(&scratch, message, strlen(message));
    frame(&rep, 0x2, scratch.p, scratch.len);
}

static void welcome(conn_t *c) {
    scratch.len = 0;
    LIT(&scratch, "\x86\xa1t\xa7welcome\xa1v\x01\xa4" "conn\xac");
    put(&scratch, c->id, 12);
    LIT(&scratch, "\xa4time");
    mp_u64(&scratch, now_ms);
    LIT(&scratch, "\xa2hb\xcd\x61\xa8\xa6limits\x80");
    frame(&rep, 0x2, scratch.p, scratch.len);
}

static void ok_flag(field_t *f, const char *shape, size_t n) {
    scratch.len = 0;
    LIT(&scratch, "\x83\xa1t\xa2ok\xa2id");
    put(&scratch, f[F_ID].v, f[F_ID].n);
    put(&scratch, shape, n);
    frame(&rep, 0x2, scratch.p, scratch.len);
}

#define OK_FLAG(f, shape) ok_flag(f, shape, sizeof shape - 1)

/* ---- channels ---- */

static channel_t **slot(const unsigned char *name, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ name[i]) * 16777619u;
    channel_t **s = &buckets[h % BUCKETS];
    while (*s && ((*s)->name_len != n || memcmp((*s)->name, name, n))) s = &(*s)->next;
    return s;
}

static int member_index(conn_t *c, channel_t *ch) {
    for (int i = 0; i < c->nchans; i++)
        if (c->chans[i] == ch) return i;
    return -1;
}

static void maybe_free(channel_t *ch) {
    if (ch->n || ch->pending) return;
    *slot(ch->name, ch->name_len) = ch->next;
    free(ch->name);
    free(ch->members);
    release(&ch->batch);
    free(ch);
}

static void unjoin(conn_t *c, int i) {
    channel_t *ch = c->chans[i];
    c->chans[i] = c->chans[--c->nchans];
    for (int k = 0; k < ch->n; k++)
        if (ch->members[k] == c) { ch->members[k] = ch->members[--ch->n]; break; }
    maybe_free(ch);
}

static void join(conn_t *c, field_t *f) {
    channel_t **s = slot(f[F_CH].v, f[F_CH].n), *ch = *s;
    if (!ch) {
        ch = calloc(1, sizeof *ch);
        ch->name = malloc(f[F_CH].n);
        memcpy(ch->name, f[F_CH].v, f[F_CH].n);
        ch->name_len = f[F_CH].n;
        *s = ch;
    }
    if (member_index(c, ch) < 0) {
        if (ch->n == ch->cap) ch->members = realloc(ch->members, sizeof(conn_t *) * (size_t)(ch->cap = ch->cap ? 2 * ch->cap : 4));
        ch->members[ch->n++] = c;
        if (c->nchans == c->capchans) c->chans = realloc(c->chans, sizeof(channel_t *) * (size_t)(c->capchans = c->capchans ? 2 * c->capchans : 2));
        c->chans[c->nchans++] = ch;
    }
    OK_FLAG(f, "\xa4" "data\x81\xa6joined\xc3");
}

static void leave(conn_t *c, field_t *f) {
    channel_t *ch = *slot(f[F_CH].v, f[F_CH].n);
    int i = ch ? member_index(c, ch) : -1;
    if (i >= 0) unjoin(c, i);
    if (i >= 0) OK_FLAG(f, "\xa4" "data\x81\xa4left\xc3");
    else OK_FLAG(f, "\xa4" "data\x81\xa4left\xc2");
}

/* The msg goes to the channel's batch (every member but the sender, after this read) and, with
 * echo, to the sender's own replies, in order; then the ok. */
static void send_msg(conn_t *c, field_t *f) {
    channel_t *ch = *slot(f[F_CH].v, f[F_CH].n);
    if (!ch || member_index(c, ch) < 0) return err(c, f, "not_member", "send: not a member of the channel");
    int echo = !f[F_ECHO].v || (f[F_ECHO].v[0] != 0xc3 && f[F_ECHO].v[0] != 0xc2) ? c->echo : f[F_ECHO].v[0] == 0xc3;
    char mid[24];
    int midn = snprintf(mid, sizeof mid, "c-%llx", (unsigned long long)mids++);
    scratch.len = 0;
    LIT(&scratch, "\x87\xa1t\xa3msg\xa2" "ch");
    put(&scratch, f[F_CH].v, f[F_CH].n);
    LIT(&scratch, "\xa2" "ev");
    put(&scratch, f[F_EV].v, f[F_EV].n);
    LIT(&scratch, "\xa4" "data");
    if (f[F_DATA].v) put(&scratch, f[F_DATA].v, f[F_DATA].n);
    else LIT(&scratch, "\xc0");
    LIT(&scratch, "\xa4" "from\xac");
    put(&scratch, c->id, 12);
    LIT(&scratch, "\xa2ts");
    mp_u64(&scratch, now_ms);
    LIT(&scratch, "\xa3mid");
    unsigned char mh = (unsigned char)(0xa0 | midn);
    put(&scratch, &mh, 1);
    put(&scratch, mid, (size_t)midn);
    frame(&ch->batch, 0x2, scratch.p, scratch.len);
    ch->from = c;
    if (!ch->pending) ch->pending = 1, ch->next_pending = pending, pending = ch;
    if (echo) frame(&rep, 0x2, scratch.p, scratch.len);
    scratch.len = 0;
    LIT(&scratch, "\x83\xa1t\xa2ok\xa2id");
    put(&scratch, f[F_ID].v, f[F_ID].n);
    LIT(&scratch, "\xa4" "data\x83\xa3mid");
    put(&scratch, &mh, 1);
    put(&scratch, mid, (size_t)midn);
    LIT(&scratch, "\xa2ts");
    mp_u64(&scratch, now_ms);
    LIT(&scratch, "\xaarecipients");
    mp_uint(&scratch, (uint64_t)(ch->n - 1 + echo));
    frame(&rep, 0x2, scratch.p, scratch.len);
}

static void fan_out(void) {
    while (pending) {
        channel_t *ch = pending;
        pending = ch->next_pending;
        ch->pending = 0;
        for (int i = 0; i < ch->n; i++)
            if (ch->members[i] != ch->from) conn_write(ch->members[i], ch->batch.p, ch->batch.len);
        ch->batch.len = 0;
        maybe_free(ch);
    }
}

/* ---- requests ---- */

static void request(conn_t *c, const unsigned char *p, size_t n) {
    field_t f[NFIELDS];
    if (!parse(p, n, f)) return close_with(c, 4000, "protocol_error: not a msgpack map with a string t");
    if (!c->welcomed) {
        if (!t_is(f, "hello")) return close_with(c, 4002, "hello_expected: the first frame must be a hello");
        if (!f[F_V].v || f[F_V].v[0] != 0x01) return close_with(c, 4003, "unsupported_version: this server speaks v1");
        c->echo = !(f[F_ECHO].v && f[F_ECHO].v[0] == 0xc2);
        c->welcomed = 1;
        return welcome(c);
    }
    if (t_is(f, "hello")) return close_with(c, 4004, "duplicate_hello");
    int is_join = t_is(f, "join"), is_leave = t_is(f, "leave"), is_send = t_is(f, "send");
    if (!is_join && !is_leave && !is_send) return err(c, f, "unknown_type", "not spoken by this peer");
    size_t len;
    if (!is_int(f[F_ID].v) || !mp_str(f[F_CH].v, f[F_CH].n, &len)) return err(c, f, "bad_request", "id and ch are required");
    if (is_send && !mp_str(f[F_EV].v, f[F_EV].n, &len)) return err(c, f, "bad_request", "send: ev is required");
    if (is_join) join(c, f);
    else if (is_leave) leave(c, f);
    else send_msg(c, f);
}

/* Whole client frames in p (unmasked in place); returns the bytes used. */
static size_t frames(conn_t *c, unsigned char *p, size_t n) {
    size_t pos = 0;
    while (!c->dead && n - pos >= 2) {
        unsigned char *h = p + pos;
        uint64_t len = h[1] & 0x7f;
        size_t off = 2;
        if (!(h[1] & 0x80)) { close_with(c, 1002, "client frames must be masked"); break; }
        if (len == 126) {
            if (n - pos < 4) break;
            len = (uint64_t)h[2] << 8 | h[3], off = 4;
        } else if (len == 127) {
            if (n - pos < 10) break;
            len = 0, off = 10;
            for (int i = 0; i < 8; i++) len = len << 8 | h[2 + i];
        }
        if (len > MAX_MESSAGE) { close_with(c, 1009, "message_too_big"); break; }
        if (n - pos < off + 4 + len) break;
        unsigned char *key = h + off, *payload = h + off + 4;
        if (key[0] | key[1] | key[2] | key[3])
            for (uint64_t i = 0; i < len; i++) payload[i] ^= key[i & 3];
        int opcode = h[0] & 0x0f;
        pos += off + 4 + len;
        if (opcode == 0x2 && (h[0] & 0x80)) request(c, payload, len);
        else if (opcode == 0x9) frame(&rep, 0xA, payload, len);
        else if (opcode == 0xA) continue;
        else if (opcode == 0x8) close_with(c, 1000, "");
        else close_with(c, 1003, "unsupported_data: text or fragmented messages");
    }
    return pos;
}

static const char BAD[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/* The upgrade; returns the bytes of the request head, or 0 (incomplete, or refused). */
static size_t upgrade(conn_t *c, unsigned char *p, size_t n) {
    unsigned char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > MAX_REQUEST_HEAD) conn_write(c, (const unsigned char *)BAD, sizeof BAD - 1), kill_conn(c);
        return 0;
    }
    const unsigned char *key = NULL;
    size_t keylen = 0;
    for (unsigned char *line = p; line < end; line = memmem(line, (size_t)(end + 2 - line), "\r\n", 2) + 2) {
        if (end - line > 18 && !strncasecmp((char *)line, "sec-websocket-key:", 18)) {
            key = line + 18;
            while (*key == ' ') key++;
            const unsigned char *e = memmem(key, (size_t)(end + 2 - key), "\r\n", 2);
            while (e > key && e[-1] == ' ') e--;
            keylen = (size_t)(e - key);
        }
    }
    if (memcmp(p, "GET ", 4) || !keylen || keylen > 64) {
        conn_write(c, (const unsigned char *)BAD, sizeof BAD - 1);
        kill_conn(c);
        return 0;
    }
    unsigned char both[64 + 36], digest[20];
    char accept[32];
    memcpy(both, key, keylen);
    memcpy(both + keylen, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    sha1(both, keylen + 36, digest);
    base64(digest, 20, accept);
    LIT(&rep, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: ");
    put(&rep, accept, 28);
    LIT(&rep, "\r\n\r\n");
    c->upgraded = 1;
    return (size_t)(end + 4 - p);
}

static void readable(conn_t *c) {
    ssize_t got = recv(c->fd, rbuf, RECV, 0);
    if (got <= 0) {
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
        return kill_conn(c);
    }
    unsigned char *p = rbuf;
    size_t n = (size_t)got, used = 0;
    if (c->in.len) {
        put(&c->in, rbuf, n);
        p = c->in.p, n = c->in.len;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    rep.len = 0;
    if (!c->upgraded) used = upgrade(c, p, n);
    if (c->upgraded && !c->dead) used += frames(c, p + used, n - used);
    fan_out();
    conn_write(c, rep.p, rep.len);
    if (used == n) release(&c->in);
    else if (p == c->in.p) memmove(c->in.p, c->in.p + used, n - used), c->in.len = n - used;
    else put(&c->in, p + used, n - used);
}

static void reap(void) {
    while (dead) {
        conn_t *c = dead;
        dead = c->next_dead;
        while (c->nchans) unjoin(c, c->nchans - 1);
        close(c->fd);
        release(&c->in);
        release(&c->out);
        free(c->chans);
        free(c);
    }
}

static int spare = -1; /* a descriptor kept for refusing connections when out of them */

static void accept_all(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
            if ((errno == EMFILE || errno == ENFILE) && spare >= 0) {
                /* out of descriptors: refuse this one (accept and close it with the spare
                 * descriptor) rather than leave it to wake the loop forever */
                fprintf(stderr, "cserver: accept: %s: a connection refused\n", strerror(errno));
                close(spare);
                close(accept(listener, NULL, NULL));
                spare = open("/dev/null", O_RDONLY);
                continue;
            }
            die("accept");
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        c->fd = fd;
        char id[13];
        snprintf(id, sizeof id, "c%011llx", (unsigned long long)conns_made++);
        memcpy(c->id, id, 12);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: cserver HOST PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    spare = open("/dev/null", O_RDONLY);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) die("bad host");
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 4096) < 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(listener, (struct sockaddr *)&addr, &alen);
    ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &lev);
    printf("PORT %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    struct epoll_event events[1024];
    for (;;) {
        int k = epoll_wait(ep, events, 1024, -1);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < k; i++) {
            conn_t *c = events[i].data.ptr;
            if (!c) accept_all(listener);
            else if (c->dead) continue;
            else {
                if (events[i].events & EPOLLOUT) drain(c);
                if (!c->dead && events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(c);
            }
        }
        reap();
    }
}
