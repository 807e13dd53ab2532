/* engine/unicode.c — UTF-8 coding, code point classes, GPT-2 byte mapping. */
#include "engine/unicode.h"

uint8_t nb_uc_class(uint32_t cp) {
    if (cp < 128) return nb_ucd_ascii[cp];
    if (cp > 0x10FFFF) return NB_UC_UNDEF;
    /* last run whose first code point is <= cp (runs start at 0, so lo ends valid) */
    size_t lo = 0, hi = nb_ucd_n_ranges;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (nb_ucd_ranges[mid].first <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return nb_ucd_ranges[lo].cls;
}

static bool is_cont(const char *s, size_t i) { return ((unsigned char)s[i] & 0xC0u) == 0x80u; }

uint32_t nb_utf8_decode(const char *s, size_t n, size_t *pos) {
    size_t i = *pos;
    unsigned char b0 = (unsigned char)s[i];
    if (b0 < 0x80) {
        *pos = i + 1;
        return b0;
    }
    if ((b0 & 0xE0u) == 0xC0u) {
        if (i + 1 < n && is_cont(s, i + 1)) {
            *pos = i + 2;
            return ((uint32_t)(b0 & 0x1Fu) << 6) | ((unsigned char)s[i + 1] & 0x3Fu);
        }
    } else if ((b0 & 0xF0u) == 0xE0u) {
        if (i + 2 < n && is_cont(s, i + 1) && is_cont(s, i + 2)) {
            *pos = i + 3;
            return ((uint32_t)(b0 & 0x0Fu) << 12) | ((uint32_t)((unsigned char)s[i + 1] & 0x3Fu) << 6) |
                   ((unsigned char)s[i + 2] & 0x3Fu);
        }
    } else if ((b0 & 0xF8u) == 0xF0u) {
        if (i + 3 < n && is_cont(s, i + 1) && is_cont(s, i + 2) && is_cont(s, i + 3)) {
            uint32_t cp = ((uint32_t)(b0 & 0x07u) << 18) | ((uint32_t)((unsigned char)s[i + 1] & 0x3Fu) << 12) |
                          ((uint32_t)((unsigned char)s[i + 2] & 0x3Fu) << 6) | ((unsigned char)s[i + 3] & 0x3Fu);
            if (cp <= 0x10FFFF) {
                *pos = i + 4;
                return cp;
            }
        }
    }
    *pos = i + 1;
    return NB_UC_REPLACEMENT;
}

size_t nb_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0u | (cp >> 6));
        out[1] = (char)(0x80u | (cp & 0x3Fu));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0u | (cp >> 12));
        out[1] = (char)(0x80u | ((cp >> 6) & 0x3Fu));
        out[2] = (char)(0x80u | (cp & 0x3Fu));
        return 3;
    }
    out[0] = (char)(0xF0u | ((cp >> 18) & 0x07u));
    out[1] = (char)(0x80u | ((cp >> 12) & 0x3Fu));
    out[2] = (char)(0x80u | ((cp >> 6) & 0x3Fu));
    out[3] = (char)(0x80u | (cp & 0x3Fu));
    return 4;
}

size_t nb_utf8_len(unsigned char lead) {
    static const uint8_t len_by_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len_by_high_nibble[lead >> 4];
}

/* GPT-2's bytes_to_unicode(): the printable bytes '!'..'~', 0xA1..0xAC and
 * 0xAE..0xFF map to themselves; the other 68 bytes, in increasing order, map
 * to 0x100, 0x101, ... so every byte has a visible, non-space stand-in. */
static bool gpt2_self(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

uint32_t nb_gpt2_byte_cp(uint8_t b) {
    if (gpt2_self(b)) return b;
    /* rank of b among the non-self bytes: 0x00..0x20 (33), 0x7F..0xA0 (34), 0xAD (1) */
    uint32_t k;
    if (b <= 0x20)
        k = b;
    else if (b <= 0xA0)
        k = 33u + (uint32_t)(b - 0x7F);
    else
        k = 67; /* 0xAD */
    return 0x100u + k;
}

int nb_gpt2_cp_byte(uint32_t cp) {
    if (cp < 0x100) return gpt2_self(cp) ? (int)cp : -1;
    if (cp < 0x100 + 33) return (int)(cp - 0x100);
    if (cp < 0x100 + 67) return (int)(0x7F + (cp - 0x100 - 33));
    if (cp == 0x100 + 67) return 0xAD;
    return -1;
}
