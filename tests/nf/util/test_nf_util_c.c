/* nf_util.h compiled as C with pedantic warnings: what a C plugin sees. */
#include <serpens/nf_util.h>

uint16_t nf_util_c_rewrite_csum(uint8_t *ip, uint8_t *l4, uint32_t new_ip, uint16_t new_port);

/* A TCP destination rewrite, as a C plugin would call it; the new TCP checksum. */
uint16_t nf_util_c_rewrite_csum(uint8_t *ip, uint8_t *l4, uint32_t new_ip, uint16_t new_port)
{
    serpens_ipv4_rewrite(ip, 16, l4, 16, 2, 1, 0, new_ip, new_port);
    return serpens_ld16(l4 + 16);
}

int nf_util_c_prefix_len(const char *text);

/* The prefix length serpens_parse_prefix reads from text, or -1 if refused. */
int nf_util_c_prefix_len(const char *text)
{
    struct serpens_prefix p;
    char why[128];
    return serpens_parse_prefix(text, &p, why, sizeof why) == SERPENS_OK ? p.len : -1;
}
