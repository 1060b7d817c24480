// Table layouts (nf.h, ABI 1.7): the loader refuses a malformed declaration,
// create_table refuses one that does not fit the table and otherwise writes
// it beside the segment, the tools read it back, and fields decode as their
// types say.

#include "support.h"

#include "plugin/registry.h"
#include "state/executor.h"
#include "state/record_layout.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>

#include <cstring>
#include <fstream>
#include <string>

using namespace serpens;
using namespace serpens::state;
using serpens::test::ScratchDir;

namespace {

int nop_init(serpens_nf_ctx *, const serpens_config *) { return SERPENS_OK; }
void nop_process(serpens_nf_ctx *, serpens_batch *) {}

// mon's hosts table as an NF would declare it.
const serpens_field host_key[] = {{"addr", 0, SERPENS_FIELD_IPV6, 0}};
const serpens_field host_value[] = {
    {"tx_packets", 0, SERPENS_FIELD_U64, 0},
    {"tx_bytes", 8, SERPENS_FIELD_U64, 0},
    {"rx_packets", 16, SERPENS_FIELD_U64, 0},
    {"rx_bytes", 24, SERPENS_FIELD_U64, 8},
};

serpens_nf_descriptor descriptor(const serpens_table_layout *layouts, uint32_t n)
{
    serpens_nf_descriptor d{};
    d.abi_major = SERPENS_ABI_MAJOR;
    d.abi_minor = SERPENS_ABI_MINOR;
    d.struct_size = sizeof d;
    d.name = "layout_test";
    d.n_ports = 1;
    d.init = nop_init;
    d.process = nop_process;
    d.table_layouts = layouts;
    d.n_table_layouts = n;
    return d;
}

std::string refusal(const serpens_table_layout &layout)
{
    const serpens_nf_descriptor d = descriptor(&layout, 1);
    RefusalReason reason{};
    std::string why = validate_descriptor(d, reason);
    if (!why.empty()) {
        CHECK(reason == RefusalReason::invalid_descriptor);
    }
    return why;
}

bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

} // namespace

TEST_CASE("record layout: the loader accepts a well-formed declaration and refuses each malformed one")
{
    const serpens_table_layout hosts = {"hosts", host_key, host_value, 1, 4, 0};
    CHECK(refusal(hosts).empty());

    const serpens_field unknown[] = {{"x", 0, 99, 0}};
    CHECK(contains(refusal({"t", unknown, nullptr, 1, 0, 0}), "field 'x' in the key has an unknown type 99"));

    const serpens_field overlapping[] = {{"a", 0, SERPENS_FIELD_U32, 0}, {"b", 2, SERPENS_FIELD_U16, 0}};
    CHECK(contains(refusal({"t", nullptr, overlapping, 0, 2, 0}),
                   "field 'b' in the value (bytes 2..3) overlaps field 'a' (bytes 0..3)"));

    const serpens_field repeated[] = {{"a", 0, SERPENS_FIELD_U8, 0}, {"a", 1, SERPENS_FIELD_U8, 0}};
    CHECK(contains(refusal({"t", repeated, nullptr, 2, 0, 0}), "field name 'a' repeats in the key"));

    const serpens_field bad_name[] = {{"Bad-Name", 0, SERPENS_FIELD_U8, 0}};
    CHECK(contains(refusal({"t", bad_name, nullptr, 1, 0, 0}), "is not 1-31 characters of [a-z0-9_]"));

    const serpens_field wrong_size[] = {{"ip", 0, SERPENS_FIELD_IPV4, 8}};
    CHECK(contains(refusal({"t", wrong_size, nullptr, 1, 0, 0}), "type ipv4 is 4 bytes, not 8"));

    const serpens_field empty_bytes[] = {{"blob", 0, SERPENS_FIELD_BYTES, 0}};
    CHECK(contains(refusal({"t", empty_bytes, nullptr, 1, 0, 0}), "a bytes field needs a size of at least 1"));

    // Past the largest key any table may have: refused at load already.
    const serpens_field far[] = {{"x", 60, SERPENS_FIELD_U64, 0}};
    CHECK(contains(refusal({"t", far, nullptr, 1, 0, 0}), "ends past the key's 64 bytes"));

    CHECK(contains(refusal({"t", nullptr, nullptr, 1, 0, 0}), "n_key is 1 but key is NULL"));
    CHECK(contains(refusal({nullptr, nullptr, nullptr, 0, 0, 0}), "names no table"));
    CHECK(contains(refusal({"t", nullptr, nullptr, 0, 0, 1}), "reserved must be zero"));

    const serpens_table_layout twice[] = {hosts, hosts};
    const serpens_nf_descriptor d2 = descriptor(twice, 2);
    RefusalReason reason{};
    CHECK(contains(validate_descriptor(d2, reason), "table 'hosts' has more than one layout"));

    serpens_nf_descriptor null_array = descriptor(nullptr, 1);
    CHECK(contains(validate_descriptor(null_array, reason), "table_layouts is NULL"));
    serpens_nf_descriptor reserved = descriptor(nullptr, 0);
    reserved.reserved5 = 1;
    CHECK(validate_descriptor(reserved, reason) == "reserved fields must be zero");
    // A 1.6 descriptor ends before table_layouts: the host reads none of it.
    serpens_nf_descriptor old = descriptor(nullptr, 1);
    old.struct_size = offsetof(serpens_nf_descriptor, table_layouts);
    CHECK(validate_descriptor(old, reason).empty());
    std::string err;
    CHECK_FALSE(declared_layout(old, "hosts", 16, 32, err));
    CHECK(err.empty());
}

TEST_CASE("record layout: create_table checks the fields against the table's sizes and writes them beside it")
{
    ScratchDir dir;
    StoreOptions o;
    o.root = dir.path();
    StateStore store(o);
    Executor &ex = store.executor("c", "mon");
    const serpens_field ok_key[] = {{"id", 0, SERPENS_FIELD_U32, 0}};
    const serpens_field past_end[] = {{"port", 4, SERPENS_FIELD_BE16, 0}};
    const serpens_table_layout layouts[] = {
        {"hosts", host_key, host_value, 1, 4, 0},
        {"small", past_end, nullptr, 1, 0, 0},
        {"ids", ok_key, nullptr, 1, 0, 0},
    };
    const serpens_nf_descriptor d = descriptor(layouts, 3);
    ex.set_descriptor(&d);
    const uint32_t eventual = SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL;

    std::string err;
    Table *hosts = ex.create_table({"hosts", eventual, 16, 32, 64, 0}, err);
    REQUIRE_MESSAGE(hosts != nullptr, err);
    const auto hosts_file = dir.path() / "c" / "mon" / "hosts.tbl";
    CHECK(std::filesystem::exists(layout_file(hosts_file)));
    const std::optional<RecordLayout> back = read_layout(hosts_file, 16, 32, err);
    REQUIRE_MESSAGE(back, err);
    REQUIRE(back->value.size() == 4);
    CHECK(back->key[0].type == FieldType::ipv6);
    CHECK(back->key[0].size == 16); // size 0 in the declaration: the type's own
    CHECK(back->value[3].name == "rx_bytes");
    CHECK(back->value[3].offset == 24);
    // Read back for other sizes: refused, not misapplied.
    CHECK_FALSE(read_layout(hosts_file, 16, 40, err));
    CHECK(contains(err, "written for key 16 value 32 bytes, the segment has key 16 value 40"));

    // 6 bytes of a 5-byte key: refused, and no segment is created.
    Table *small = ex.create_table({"small", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 5, 8, 64, 0}, err);
    CHECK(small == nullptr);
    CHECK(contains(err, "chain 'c' nf 'mon' table 'small': table layout 'small': field 'port' in the key "
                        "(offset 4, 2 bytes) ends past the key's 5 bytes"));
    CHECK_FALSE(std::filesystem::exists(dir.path() / "c" / "mon" / "small.tbl"));

    // A table the NF does not describe loses a stale layout file.
    const auto plain_file = dir.path() / "c" / "mon" / "plain.tbl";
    std::filesystem::create_directories(plain_file.parent_path());
    std::ofstream(layout_file(plain_file)) << "{}";
    REQUIRE(ex.create_table({"plain", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, 4, 8, 64, 0}, err));
    CHECK_FALSE(std::filesystem::exists(layout_file(plain_file)));
    CHECK_FALSE(read_layout(plain_file, 4, 8, err));
    CHECK(err.empty()); // none is not an error

    // A file that is not a layout is reported, not trusted.
    std::ofstream(layout_file(plain_file)) << "{\"version\": 1, \"key\": [{\"name\": 3}]}";
    CHECK_FALSE(read_layout(plain_file, 4, 8, err));
    CHECK(contains(err, "not a table layout of version 1"));
}

TEST_CASE("record layout: every field type decodes as it says")
{
    RecordLayout layout;
    layout.value = {
        {"a_u8", FieldType::u8, 0, 1},      {"b_u16", FieldType::u16, 1, 2},     {"c_u32", FieldType::u32, 3, 4},
        {"d_u64", FieldType::u64, 7, 8},    {"e_be16", FieldType::be16, 15, 2},  {"f_be32", FieldType::be32, 17, 4},
        {"g_be64", FieldType::be64, 21, 8}, {"h_ipv4", FieldType::ipv4, 29, 4},  {"i_ipv6", FieldType::ipv6, 33, 16},
        {"j_mac", FieldType::mac, 49, 6},   {"k_blob", FieldType::bytes, 55, 3},
    };
    REQUIRE(validate_layout(layout, 0, 58).empty());
    uint8_t v[58] = {};
    v[0] = 200;
    const uint16_t u16 = 65000;
    const uint32_t u32 = 4000000000u;
    const uint64_t u64 = 0x0102030405060708ull;
    std::memcpy(v + 1, &u16, 2);
    std::memcpy(v + 3, &u32, 4);
    std::memcpy(v + 7, &u64, 8);
    const uint8_t be[] = {0x01, 0xbb, 0x0a, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x00};
    std::memcpy(v + 15, be, 2);     // 443
    std::memcpy(v + 17, be + 2, 4); // 167772161
    std::memcpy(v + 21, be + 6, 8); // 256
    const uint8_t ip4[] = {192, 0, 2, 7};
    std::memcpy(v + 29, ip4, 4);
    REQUIRE(inet_pton(AF_INET6, "::ffff:10.0.0.1", v + 33) == 1);
    const uint8_t mac[] = {0x02, 0, 0, 0xab, 0xcd, 0xef};
    std::memcpy(v + 49, mac, 6);
    const uint8_t blob[] = {0xde, 0xad, 0x01};
    std::memcpy(v + 55, blob, 3);

    const nlohmann::ordered_json d = decode_fields(layout.value, v);
    CHECK(d.dump() == "{\"a_u8\":200,\"b_u16\":65000,\"c_u32\":4000000000,\"d_u64\":72623859790382856,"
                      "\"e_be16\":443,\"f_be32\":167772161,\"g_be64\":256,\"h_ipv4\":\"192.0.2.7\","
                      "\"i_ipv6\":\"::ffff:10.0.0.1\",\"j_mac\":\"02:00:00:ab:cd:ef\",\"k_blob\":\"dead01\"}");
    // Every type has a name the layout file can carry.
    for (const Field &f : layout.value) {
        CHECK(field_type_of(field_type_name(f.type)) == f.type);
    }
    CHECK_FALSE(field_type_of("u128"));
}
