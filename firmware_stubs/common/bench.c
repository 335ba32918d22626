/* The bench protocol on the UART: exactly MLPerf Tiny's device-under-test command set
 * (so any host that drives an MLPerf Tiny reference firmware drives this one), plus
 * commands starting with `x` that plain MLPerf Tiny devices answer with
 * `e-[Unknown command: ...]`, which is how the host tells them apart:
 *
 *   xinfo%          m-xinfo-[proto=2,check=crc16,in=N,out=M,tick-hz=H,frame-max=F,board=B,...]
 *   xinfer N%       N timed inferences, one `m-xlap-ticks-T` line each (no round trips)
 *   xresults%       m-xresults-[hex of the output floats, little-endian]: exact values
 *   xresults O N%   m-xresults-O-[hex of output bytes O..O+N-1]: a long output in pieces
 *   xbin N%         m-xbin-ready-[N], then binary frames (below) fill the db buffer
 *
 * Protocol 2 (proto=2 in xinfo): every reply line of an `x` command except the closing
 * `m-ready` ends in `*XXXX`, the CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no
 * reflection, no final xor; "123456789" -> 29b1) of the line's characters before the `*`,
 * as four lowercase hex digits. One flipped bit on the wire then never turns a tick count
 * into another valid one; the host drops the line and asks again. Protocol 1 firmware
 * sent the same lines without the suffix. MLPerf Tiny's own commands keep its plain lines.
 *
 * Binary frame (host -> device), all integers little-endian:
 *   0xA5 | type | seq | len:u16 | offset:u32 | payload[len] | crc32:u32 (type..payload)
 *   type 1 = data (written at offset), 2 = end, 3 = abort
 * The device answers each frame with 2 bytes: 0x06 seq (ACK) or 0x15 seq (NAK). A frame
 * with a bad CRC, a bad length or a gap of more than IDLE_MS between bytes is NAKed once
 * the line has been quiet for IDLE_MS (so the rest of a damaged frame is not mistaken
 * for the next one); the host retransmits. `end` is ACKed, then the device prints
 * `m-xbin-done-[len=N,crc=XXXXXXXX]` and `m-ready` and returns to text mode.
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "crc32.h"
#include "model_api.h"

#define CMD_MAX 128
#define FRAME_MAX 1024
#define FRAME_HDR 9
#define IDLE_MS 20
#define BIN_IDLE_MS 5000

#define ACK 0x06
#define NAK 0x15

static uint32_t db_expect;
static uint32_t db_have;

/* --- output ------------------------------------------------------------------------ */

static int line_checked; /* set while an `x` command runs: its lines carry a CRC-16 */
static uint16_t line_crc = 0xFFFFu;

/* CRC-16/CCITT-FALSE, bitwise: a reply line is ~20-80 characters, so a 512-byte table
 * would buy nothing at 115200 baud (~87 us a character) and cost flash on every board. */
static uint16_t crc16_step(uint16_t crc, uint8_t byte) {
    crc ^= (uint16_t)(byte << 8);
    for (int k = 0; k < 8; k++) crc = (crc & 0x8000u) ? (uint16_t)(crc << 1 ^ 0x1021u) : (uint16_t)(crc << 1);
    return crc;
}

static void out(char c) {
    board_putc(c);
    line_crc = crc16_step(line_crc, (uint8_t)c);
}

static void put_str(const char *s) {
    while (*s) out(*s++);
}

static void put_hex(uint32_t v, int digits);

/* Ends a reply line: `*XXXX` first while an `x` command runs. */
static void end_line(void) {
    if (line_checked) {
        uint16_t crc = line_crc;
        board_putc('*');
        for (int shift = 12; shift >= 0; shift -= 4) board_putc("0123456789abcdef"[(crc >> shift) & 0xFu]);
    }
    board_putc('\r');
    board_putc('\n');
    line_crc = 0xFFFFu;
}

static void put_line(const char *s) {
    put_str(s);
    end_line();
}

static void put_u64(uint64_t v) {
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + (v % 10u));
        v /= 10u;
    } while (v);
    put_str(&buf[i]);
}

static void put_hex(uint32_t v, int digits) {
    static const char hex[] = "0123456789abcdef";
    for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) out(hex[(v >> shift) & 0xFu]);
}

/* printf("%0.3f") without newlib's float printf (~10 KB of flash). */
static void put_fixed3(float f) {
    if (f != f) {
        put_str("nan");
        return;
    }
    if (f < 0) {
        out('-');
        f = -f;
    }
    if (f > 4.0e9f) {
        put_str("inf");
        return;
    }
    uint64_t milli = (uint64_t)((double)f * 1000.0 + 0.5);
    put_u64(milli / 1000u);
    out('.');
    uint32_t frac = (uint32_t)(milli % 1000u);
    out((char)('0' + frac / 100u));
    out((char)('0' + (frac / 10u) % 10u));
    out((char)('0' + frac % 10u));
}

/* `m-ready` closes every reply and is never checksummed: MLPerf Tiny hosts wait for it. */
static void ready(void) {
    int checked = line_checked;
    line_checked = 0;
    line_crc = 0xFFFFu;
    put_line("m-ready");
    line_checked = checked;
}

static void error(const char *what, const char *arg) {
    put_str("e-[");
    put_str(what);
    if (arg) put_str(arg);
    put_line("]");
}

/* --- timing ------------------------------------------------------------------------ */

static uint64_t ms_ticks(uint32_t ms) { return (uint64_t)board_tick_hz() / 1000u * ms; }

static uint64_t ticks_to_us(uint64_t ticks) { return ticks * 1000000u / board_tick_hz(); }

static void timestamp(void) {
    put_str("m-lap-us-");
    put_u64(ticks_to_us(board_ticks()));
    end_line();
}

/* --- commands ---------------------------------------------------------------------- */

static int parse_u32(const char **p, uint32_t *out) {
    const char *s = *p;
    while (*s == ' ') s++;
    if (*s < '0' || *s > '9') return 0;
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10u + (uint32_t)(*s++ - '0');
        if (v > 0xFFFFFFFFu) return 0;
    }
    *out = (uint32_t)v;
    *p = s;
    return 1;
}

static int end_of_args(const char *p) {
    while (*p == ' ') p++;
    return *p == 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void print_results(void) {
    put_str("m-results-[");
    for (uint32_t i = 0; i < edgetool_output_count; i++) {
        if (i) out(',');
        put_fixed3(edgetool_output_buffer[i]);
    }
    put_line("]");
}

static void cmd_db(const char *args) {
    uint32_t n;
    if (strncmp(args, "load", 4) == 0 && (args[4] == ' ' || args[4] == 0)) {
        const char *p = args + 4;
        if (!parse_u32(&p, &n) || !end_of_args(p)) {
            error("db load needs a byte count", 0);
        } else if (n > edgetool_input_bytes) {
            error("db load: buffer holds ", 0);
            put_u64(edgetool_input_bytes);
            end_line();
        } else {
            db_expect = n;
            db_have = 0;
            put_str("m-[Expecting ");
            put_u64(n);
            put_line(" bytes]");
        }
        return;
    }
    if (strcmp(args, "print") == 0) {
        put_str("m-buffer");
        for (uint32_t i = 0; i < db_have; i++) {
            out('-');
            put_hex(edgetool_input_buffer[i], 2);
        }
        end_line();
        return;
    }
    size_t len = strlen(args);
    if (len == 0 || len % 2) {
        error("db: odd number of hex digits", 0);
        return;
    }
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_value(args[i]), lo = hex_value(args[i + 1]);
        if (hi < 0 || lo < 0) {
            error("db: not hex: ", args);
            return;
        }
        if (db_have >= db_expect) {
            error("db: more bytes than announced by db load", 0);
            return;
        }
        edgetool_input_buffer[db_have++] = (uint8_t)(hi << 4 | lo);
    }
    if (db_have == db_expect) put_line("m-load-done");
}

static void cmd_infer(const char *args) {
    uint32_t n, warmup = 0;
    const char *p = args;
    if (!parse_u32(&p, &n) || (!end_of_args(p) && !parse_u32(&p, &warmup)) || !end_of_args(p)) {
        error("infer needs N [W]", 0);
        return;
    }
    put_str("m-warmup-start-");
    put_u64(warmup);
    end_line();
    for (uint32_t i = 0; i < warmup; i++) edgetool_run();
    put_line("m-warmup-done");
    put_str("m-infer-start-");
    put_u64(n);
    end_line();
    timestamp();
    for (uint32_t i = 0; i < n; i++) edgetool_run();
    timestamp();
    put_line("m-infer-done");
    print_results();
}

static void cmd_xinfer(const char *args) {
    uint32_t n;
    const char *p = args;
    if (!parse_u32(&p, &n) || !end_of_args(p)) {
        error("xinfer needs N", 0);
        return;
    }
    put_str("m-infer-start-");
    put_u64(n);
    end_line();
    for (uint32_t i = 0; i < n; i++) {
        uint64_t t0 = board_ticks();
        edgetool_run();
        uint64_t t1 = board_ticks();
        put_str("m-xlap-ticks-");
        put_u64(t1 - t0);
        end_line();
    }
    put_line("m-infer-done");
}

static void cmd_xresults(const char *args) {
    const uint8_t *bytes = (const uint8_t *)edgetool_output_buffer;
    uint32_t total = edgetool_output_count * 4u, offset = 0, n = total;
    const char *p = args;
    if (!end_of_args(p)) {
        if (!parse_u32(&p, &offset) || !parse_u32(&p, &n) || !end_of_args(p) || offset > total ||
            n > total - offset) {
            error("xresults needs nothing or OFFSET COUNT within the output", 0);
            return;
        }
        put_str("m-xresults-");
        put_u64(offset);
        out('-');
    } else {
        put_str("m-xresults-");
    }
    out('[');
    for (uint32_t i = offset; i < offset + n; i++) put_hex(bytes[i], 2);
    put_line("]");
}

static void cmd_xinfo(void) {
    put_str("m-xinfo-[proto=2,check=crc16,in=");
    put_u64(edgetool_input_bytes);
    put_str(",out=");
    put_u64(edgetool_output_count);
    put_str(",tick-hz=");
    put_u64(board_tick_hz());
    put_str(",frame-max=");
    put_u64(FRAME_MAX);
    put_str(",board=");
    put_str(board_name);
    put_str(",timer=");
    put_str(board_timer);
    put_str(",model=");
    put_str(edgetool_model_name);
    put_line("]");
}

/* --- binary upload ----------------------------------------------------------------- */

/* Next byte, or -1 when the line stays quiet for `quiet` ticks. */
static int getc_within(uint64_t quiet) {
    uint64_t start = board_ticks();
    for (;;) {
        int c = board_getc();
        if (c >= 0) return c;
        if (board_ticks() - start > quiet) return -1;
        board_idle();
    }
}

/* Discard the rest of a damaged frame: read until the line is quiet. */
static void drain(void) {
    while (getc_within(ms_ticks(IDLE_MS)) >= 0) {
    }
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void reply(uint8_t code, uint8_t seq) {
    board_putc((char)code);
    board_putc((char)seq);
}

static void binary_upload(uint32_t total) {
    static uint8_t frame[FRAME_HDR + FRAME_MAX + 4];
    uint64_t idle = ms_ticks(IDLE_MS);
    for (;;) {
        int c = getc_within(ms_ticks(BIN_IDLE_MS));
        if (c < 0) { /* the host went away: back to text mode rather than hang */
            error("xbin: timeout", 0);
            ready();
            return;
        }
        if (c != 0xA5) continue; /* resynchronise on the next frame start */
        frame[0] = 0xA5;
        uint32_t got = 1, need = FRAME_HDR;
        int ok = 1;
        while (got < need) {
            c = getc_within(idle);
            if (c < 0) {
                ok = 0;
                break;
            }
            frame[got++] = (uint8_t)c;
            if (got == FRAME_HDR) {
                uint32_t len = (uint32_t)frame[3] | (uint32_t)frame[4] << 8;
                if (len > FRAME_MAX) {
                    ok = 0;
                    break;
                }
                need = FRAME_HDR + len + 4;
            }
        }
        uint8_t type = frame[1], seq = got > 2 ? frame[2] : 0xFF;
        if (ok) {
            uint32_t len = need - FRAME_HDR - 4;
            uint32_t crc = crc32_update(0, frame + 1, FRAME_HDR - 1 + len);
            uint32_t offset = le32(frame + 5);
            ok = crc == le32(frame + FRAME_HDR + len) &&
                 (type != 1 || (offset <= total && len <= total - offset));
            if (ok && type == 1) {
                memcpy(edgetool_input_buffer + offset, frame + FRAME_HDR, len);
                if (offset + len > db_have) db_have = offset + len;
            }
        }
        if (!ok) {
            drain();
            reply(NAK, seq);
            continue;
        }
        reply(ACK, seq);
        if (type == 2 || type == 3) {
            if (type == 2) {
                db_expect = total;
                db_have = total;
                put_str("m-xbin-done-[len=");
                put_u64(total);
                put_str(",crc=");
                put_hex(crc32_update(0, edgetool_input_buffer, total), 8);
                put_line("]");
            }
            ready();
            return;
        }
    }
}

static int cmd_xbin(const char *args) {
    uint32_t n;
    const char *p = args;
    if (!parse_u32(&p, &n) || !end_of_args(p)) {
        error("xbin needs a byte count", 0);
        return 0;
    }
    if (n > edgetool_input_bytes) {
        error("xbin: buffer holds ", 0);
        return 0;
    }
    put_str("m-xbin-ready-[");
    put_u64(n);
    put_line("]");
    ready();
    binary_upload(n);
    return 1;
}

static int starts(const char *cmd, const char *word, const char **args) {
    size_t n = strlen(word);
    if (strncmp(cmd, word, n) != 0 || (cmd[n] != ' ' && cmd[n] != 0)) return 0;
    *args = cmd + n;
    while (**args == ' ') (*args)++;
    return 1;
}

static void dispatch(const char *cmd) {
    const char *args;
    if (strcmp(cmd, "name") == 0) {
        put_str("m-name-dut-[edgetool-");
        put_str(board_name);
        put_line("]");
    } else if (strcmp(cmd, "profile") == 0) {
        put_line("m-profile-[edgetool-bench-1]");
        put_str("m-model-[");
        put_str(edgetool_model_name);
        put_line("]");
    } else if (strcmp(cmd, "timestamp") == 0) {
        timestamp();
    } else if (strcmp(cmd, "results") == 0) {
        print_results();
    } else if (starts(cmd, "db", &args)) {
        cmd_db(args);
    } else if (starts(cmd, "infer", &args)) {
        cmd_infer(args);
    } else if (cmd[0] == 'x') {
        line_checked = 1;
        int own_ready = 0;
        if (strcmp(cmd, "xinfo") == 0) {
            cmd_xinfo();
        } else if (starts(cmd, "xinfer", &args)) {
            cmd_xinfer(args);
        } else if (starts(cmd, "xresults", &args)) {
            cmd_xresults(args);
        } else if (starts(cmd, "xbin", &args)) {
            own_ready = cmd_xbin(args); /* it sends its own m-ready */
        } else {
            error("Unknown command: ", cmd);
        }
        line_checked = 0;
        if (own_ready) return;
    } else {
        error("Unknown command: ", cmd);
    }
    ready();
}

int main(void) {
    static char cmd[CMD_MAX + 1];
    size_t len = 0;
    int overflow = 0;
    board_init();
    put_line("m-timestamp-mode-performance");
    put_line("m-init-done");
    ready();
    for (;;) {
        int c = board_getc();
        if (c < 0) {
            board_idle();
            continue;
        }
        if (c == '%') {
            cmd[len] = 0;
            if (overflow) {
                error("command too long", 0);
                ready();
            } else {
                dispatch(cmd);
            }
            len = 0;
            overflow = 0;
        } else if (c == '\r' || c == '\n') {
            continue;
        } else if (len < CMD_MAX) {
            /* Non-printable bytes (line noise) are kept: the command then fails loudly. */
            cmd[len++] = (c >= 0x20 && c < 0x7F) ? (char)c : '?';
        } else {
            overflow = 1;
        }
    }
}
