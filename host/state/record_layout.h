#pragma once
// What the bytes of a state table's keys and values mean (nf.h, "What a
// table's bytes mean", ABI 1.7): the NF's declaration checked, written beside
// the table's segment as <table>.layout.json when the table is created, read
// back by the tools that inspect a state dir (they load no plugin), and
// decoded.  One place knows the field types, so the host that writes the file
// and the tools that read it cannot disagree.  Cold path only; thread-safe
// (no shared state).

#include <serpens/nf.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace serpens::state {

enum class FieldType : uint16_t {
    u8 = SERPENS_FIELD_U8,
    u16 = SERPENS_FIELD_U16,
    u32 = SERPENS_FIELD_U32,
    u64 = SERPENS_FIELD_U64,
    be16 = SERPENS_FIELD_BE16,
    be32 = SERPENS_FIELD_BE32,
    be64 = SERPENS_FIELD_BE64,
    ipv4 = SERPENS_FIELD_IPV4,
    ipv6 = SERPENS_FIELD_IPV6,
    mac = SERPENS_FIELD_MAC,
    bytes = SERPENS_FIELD_BYTES,
};

struct Field {
    std::string name;
    FieldType type = FieldType::bytes;
    uint32_t offset = 0;
    uint32_t size = 0; // bytes; always set (the type's own size but for `bytes`)
};

struct RecordLayout {
    std::vector<Field> key;
    std::vector<Field> value;
};

// "u8", "be16", "ipv4", ...; nullopt for a name no type has.
std::optional<FieldType> field_type_of(std::string_view name) noexcept;
const char *field_type_name(FieldType type) noexcept;

// Whether the descriptor has the fields ABI 1.7 appended (table layouts).
inline bool has_table_layouts(const serpens_nf_descriptor &desc) noexcept
{
    return desc.struct_size >= offsetof(serpens_nf_descriptor, reserved5) + sizeof desc.reserved5;
}

// The loader's check of a descriptor's table_layouts: "" when they are well
// formed (each as if its table had the largest key and value sizes), else
// the reason.  A pre-1.7 descriptor has none: "".
std::string check_declared_layouts(const serpens_nf_descriptor &desc);

// create_table's: the layout the NF declared for `table`, checked against
// the table's sizes.  nullopt with `err` empty when it declared none (or
// the descriptor predates 1.7); nullopt with `err` set when it does not fit.
std::optional<RecordLayout> declared_layout(const serpens_nf_descriptor &desc, std::string_view table,
                                            uint32_t key_size, uint32_t value_size, std::string &err);

// "" when `layout` fits keys of key_size and values of value_size bytes,
// else the first rule broken: a name that is not [a-z0-9_]{1,31} or repeats,
// too many fields, a size that does not fit the type, a field past the end,
// two fields overlapping.
std::string validate_layout(const RecordLayout &layout, uint32_t key_size, uint32_t value_size);

// <dir>/<table>.layout.json beside the segment <dir>/<table>.tbl.
std::filesystem::path layout_file(const std::filesystem::path &segment);
// Writes the layout beside `segment` through a temporary file and a rename,
// so a reader sees the old file or the new one, never half of one.  false
// and `err` (naming the file) when it cannot.
bool write_layout(const std::filesystem::path &segment, const RecordLayout &layout, uint32_t key_size,
                  uint32_t value_size, std::string &err);
// Removes the layout beside `segment`: the NF no longer describes the table,
// and a stale one would decode its bytes wrongly.
void remove_layout(const std::filesystem::path &segment) noexcept;
// The layout beside `segment`, checked against the segment's sizes (a file
// written for other sizes is refused).  nullopt with `err` empty when there
// is none; nullopt with `err` when it is unreadable or does not fit.
std::optional<RecordLayout> read_layout(const std::filesystem::path &segment, uint32_t key_size, uint32_t value_size,
                                        std::string &err);

// The layout as the JSON the file holds: {"key": [fields], "value": [fields]},
// each field {"name", "type", "offset", "size"}.
nlohmann::ordered_json layout_json(const RecordLayout &layout);

// Lower-case hex of n bytes.
std::string hex(const uint8_t *bytes, std::size_t n);
// Field `f` of a key or value: integers as JSON numbers, addresses as text,
// `bytes` as hex.  `bytes` holds at least f.offset + f.size bytes.
nlohmann::ordered_json field_value(const Field &f, const uint8_t *bytes);
// Every field of `fields` by name, in declaration order.
nlohmann::ordered_json decode_fields(const std::vector<Field> &fields, const uint8_t *bytes);

} // namespace serpens::state
