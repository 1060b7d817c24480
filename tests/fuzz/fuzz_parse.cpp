// libFuzzer target: net::parse_packet on arbitrary bytes.  Besides ASan/UBSan
// catching out-of-bounds reads, it checks the contract of parse.h on every
// input and traps when it is broken.
#include "net/parse.h"

#include <cstddef>
#include <cstdint>

using namespace serpens::net;

namespace {

[[noreturn]] void broken() { __builtin_trap(); }

void check(bool ok)
{
    if (!ok) {
        broken();
    }
}

bool within(uint16_t off, std::size_t size) { return off == SERPENS_OFFSET_NONE || off <= size; }

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, std::size_t size)
{
    if (size > UINT32_MAX) {
        return 0;
    }
    serpens_pkt pkt{};
    FlowKey key;
    key.src_port = 0xdead; // must be overwritten
    const ParseResult r = parse_packet(data, static_cast<uint32_t>(size), pkt, key);
    check(static_cast<std::size_t>(r) < kParseResultCount);
    check(parse_result_name(r)[0] != '?');
    check(within(pkt.l3_offset, size) && within(pkt.l4_offset, size) && within(pkt.payload_offset, size));
    if (r == ParseResult::ok) {
        check((pkt.flags & SERPENS_PKT_F_PARSED) != 0);
        check(pkt.l3_type == SERPENS_L3_IPV4 || pkt.l3_type == SERPENS_L3_IPV6);
        check(key.ip_version == pkt.l3_type);
        check(pkt.l3_offset >= 14 && pkt.l3_offset != SERPENS_OFFSET_NONE);
        check(pkt.l4_offset == SERPENS_OFFSET_NONE || pkt.l4_offset > pkt.l3_offset);
        check(pkt.payload_offset == SERPENS_OFFSET_NONE ||
              (pkt.l4_offset != SERPENS_OFFSET_NONE && pkt.payload_offset > pkt.l4_offset));
        check((pkt.flags & SERPENS_PKT_F_FRAGMENT) == 0 || pkt.l4_offset == SERPENS_OFFSET_NONE);
        check(pkt.flow_hash == key.hash());
        check(key.hash() == key.reversed().hash());
        check(key.canonical() == key.reversed().canonical());
        check(key.pad[0] == 0 && key.pad[1] == 0);
    } else {
        check((pkt.flags & SERPENS_PKT_F_PARSED) == 0);
        check(pkt.flow_hash == 0);
        check(pkt.l4_offset == SERPENS_OFFSET_NONE && pkt.payload_offset == SERPENS_OFFSET_NONE);
        check(key == FlowKey{});
    }
    return 0;
}
