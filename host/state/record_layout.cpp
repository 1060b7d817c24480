// Table layouts: checked, written beside segments, read back, decoded.

#include "state/record_layout.h"

#include "net/addr_text.h"
#include "state/layout.h"
#include "state/segment_file.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace serpens::state {

namespace {

struct TypeInfo {
    FieldType type;
    const char *name;
    uint32_t size; // 0: the field says (bytes)
};

constexpr std::array<TypeInfo, 11> types{{
    {FieldType::u8, "u8", 1},
    {FieldType::u16, "u16", 2},
    {FieldType::u32, "u32", 4},
    {FieldType::u64, "u64", 8},
    {FieldType::be16, "be16", 2},
    {FieldType::be32, "be32", 4},
    {FieldType::be64, "be64", 8},
    {FieldType::ipv4, "ipv4", 4},
    {FieldType::ipv6, "ipv6", 16},
    {FieldType::mac, "mac", 6},
    {FieldType::bytes, "bytes", 0},
}};

const TypeInfo *info_of(FieldType type) noexcept
{
    for (const TypeInfo &t : types) {
        if (t.type == type) {
            return &t;
        }
    }
    return nullptr;
}

constexpr std::size_t field_name_max = 31;

bool valid_field_name(const std::string &name)
{
    return !name.empty() && name.size() <= field_name_max && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
}

std::string check_part(const std::vector<Field> &fields, const char *part, uint32_t limit)
{
    const std::string in = std::string(" in the ") + part;
    if (fields.size() > SERPENS_MAX_TABLE_FIELDS) {
        return std::to_string(fields.size()) + " fields" + in + ", at most " + std::to_string(SERPENS_MAX_TABLE_FIELDS);
    }
    for (std::size_t i = 0; i < fields.size(); ++i) {
        const Field &f = fields[i];
        if (!valid_field_name(f.name)) {
            return "field name '" + f.name + "'" + in + " is not 1-" + std::to_string(field_name_max) +
                   " characters of [a-z0-9_]";
        }
        const std::string field = "field '" + f.name + "'" + in;
        const TypeInfo *t = info_of(f.type);
        if (t == nullptr) {
            return field + " has an unknown type " + std::to_string(static_cast<unsigned>(f.type));
        }
        if (t->size != 0 && f.size != t->size) {
            return field + ": type " + t->name + " is " + std::to_string(t->size) + " bytes, not " +
                   std::to_string(f.size);
        }
        if (f.size == 0) {
            return field + ": a bytes field needs a size of at least 1";
        }
        if (uint64_t{f.offset} + f.size > limit) {
            return field + " (offset " + std::to_string(f.offset) + ", " + std::to_string(f.size) +
                   " bytes) ends past the " + part + "'s " + std::to_string(limit) + " bytes";
        }
        for (std::size_t j = 0; j < i; ++j) {
            const Field &g = fields[j];
            if (g.name == f.name) {
                return "field name '" + f.name + "' repeats" + in;
            }
            if (f.offset < g.offset + g.size && g.offset < f.offset + f.size) {
                return field + " (bytes " + std::to_string(f.offset) + ".." + std::to_string(f.offset + f.size - 1) +
                       ") overlaps field '" + g.name + "' (bytes " + std::to_string(g.offset) + ".." +
                       std::to_string(g.offset + g.size - 1) + ")";
            }
        }
    }
    return {};
}

// ABI fields as Fields; "" or why they cannot be (before validate_layout).
std::string from_abi(const serpens_field *abi, uint16_t n, const char *part, std::vector<Field> &out)
{
    if (n != 0 && abi == nullptr) {
        return std::string("n_") + part + " is " + std::to_string(n) + " but " + part + " is NULL";
    }
    for (uint16_t i = 0; i < n; ++i) {
        if (abi[i].name == nullptr) {
            return std::string(part) + " field " + std::to_string(i) + " has a NULL name";
        }
        Field f;
        f.name = abi[i].name;
        f.type = static_cast<FieldType>(abi[i].type);
        f.offset = abi[i].offset;
        const TypeInfo *t = info_of(f.type);
        // Size 0 of a fixed-size type means "its own size".
        f.size = abi[i].size == 0 && t != nullptr ? t->size : abi[i].size;
        out.push_back(std::move(f));
    }
    return {};
}

// One declared layout as a RecordLayout checked against the sizes.
std::optional<RecordLayout> convert(const serpens_table_layout &decl, uint32_t key_size, uint32_t value_size,
                                    std::string &err)
{
    const std::string where = std::string("table layout '") + decl.table + "': ";
    RecordLayout layout;
    if (decl.reserved != 0) {
        err = where + "reserved must be zero";
        return std::nullopt;
    }
    if (auto why = from_abi(decl.key, decl.n_key, "key", layout.key); !why.empty()) {
        err = where + why;
        return std::nullopt;
    }
    if (auto why = from_abi(decl.value, decl.n_value, "value", layout.value); !why.empty()) {
        err = where + why;
        return std::nullopt;
    }
    if (auto why = validate_layout(layout, key_size, value_size); !why.empty()) {
        err = where + why;
        return std::nullopt;
    }
    return layout;
}

nlohmann::ordered_json fields_json(const std::vector<Field> &fields)
{
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const Field &f : fields) {
        out.push_back({{"name", f.name}, {"type", field_type_name(f.type)}, {"offset", f.offset}, {"size", f.size}});
    }
    return out;
}

// Fields from the file's JSON; false when its shape is not the one written.
bool fields_from_json(const nlohmann::json &list, std::vector<Field> &out)
{
    if (!list.is_array()) {
        return false;
    }
    for (const nlohmann::json &j : list) {
        if (!j.is_object() || !j.contains("name") || !j["name"].is_string() || !j.contains("type") ||
            !j["type"].is_string() || !j.contains("offset") || !j["offset"].is_number_unsigned() ||
            !j.contains("size") || !j["size"].is_number_unsigned()) {
            return false;
        }
        const std::optional<FieldType> type = field_type_of(j["type"].get<std::string>());
        if (!type || j["offset"].get<uint64_t>() > UINT32_MAX || j["size"].get<uint64_t>() > UINT32_MAX) {
            return false;
        }
        out.push_back({j["name"].get<std::string>(), *type, j["offset"].get<uint32_t>(), j["size"].get<uint32_t>()});
    }
    return true;
}

template<typename T>
T load(const uint8_t *p) noexcept
{
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

std::string address_text(int family, const uint8_t *p)
{
    char buf[INET6_ADDRSTRLEN] = "?";
    ::inet_ntop(family, p, buf, sizeof buf);
    return buf;
}

} // namespace

std::optional<FieldType> field_type_of(std::string_view name) noexcept
{
    for (const TypeInfo &t : types) {
        if (name == t.name) {
            return t.type;
        }
    }
    return std::nullopt;
}

const char *field_type_name(FieldType type) noexcept
{
    const TypeInfo *t = info_of(type);
    return t != nullptr ? t->name : "?";
}

std::string check_declared_layouts(const serpens_nf_descriptor &desc)
{
    if (!has_table_layouts(desc) || desc.n_table_layouts == 0) {
        return {};
    }
    if (desc.table_layouts == nullptr) {
        return "n_table_layouts is " + std::to_string(desc.n_table_layouts) + " but table_layouts is NULL";
    }
    for (uint32_t i = 0; i < desc.n_table_layouts; ++i) {
        const serpens_table_layout &decl = desc.table_layouts[i];
        if (decl.table == nullptr || decl.table[0] == '\0' || std::strlen(decl.table) > table_name_max) {
            return "table layout " + std::to_string(i) + " names no table (1-" + std::to_string(table_name_max) +
                   " characters)";
        }
        for (uint32_t j = 0; j < i; ++j) {
            if (std::strcmp(desc.table_layouts[j].table, decl.table) == 0) {
                return std::string("table '") + decl.table + "' has more than one layout";
            }
        }
        std::string err;
        if (!convert(decl, max_key_size, max_value_size, err)) {
            return err;
        }
    }
    return {};
}

std::optional<RecordLayout> declared_layout(const serpens_nf_descriptor &desc, std::string_view table,
                                            uint32_t key_size, uint32_t value_size, std::string &err)
{
    err.clear();
    if (!has_table_layouts(desc) || desc.table_layouts == nullptr) {
        return std::nullopt;
    }
    for (uint32_t i = 0; i < desc.n_table_layouts; ++i) {
        const serpens_table_layout &decl = desc.table_layouts[i];
        if (decl.table != nullptr && table == decl.table) {
            return convert(decl, key_size, value_size, err);
        }
    }
    return std::nullopt;
}

std::string validate_layout(const RecordLayout &layout, uint32_t key_size, uint32_t value_size)
{
    if (auto why = check_part(layout.key, "key", key_size); !why.empty()) {
        return why;
    }
    return check_part(layout.value, "value", value_size);
}

std::filesystem::path layout_file(const std::filesystem::path &segment)
{
    std::filesystem::path file = segment;
    return file.replace_extension(".layout.json");
}

nlohmann::ordered_json layout_json(const RecordLayout &layout)
{
    return {{"key", fields_json(layout.key)}, {"value", fields_json(layout.value)}};
}

bool write_layout(const std::filesystem::path &segment, const RecordLayout &layout, uint32_t key_size,
                  uint32_t value_size, std::string &err)
{
    const std::filesystem::path file = layout_file(segment);
    const std::string tmp = creation_name(file);
    nlohmann::ordered_json doc = {{"version", 1}, {"key_size", key_size}, {"value_size", value_size}};
    doc.update(layout_json(layout));
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << doc.dump(2) << "\n";
        out.close();
        if (!out) {
            err = tmp + ": cannot write";
            ::unlink(tmp.c_str());
            return false;
        }
    }
    return publish(tmp, file, err);
}

void remove_layout(const std::filesystem::path &segment) noexcept
{
    std::error_code ec;
    std::filesystem::remove(layout_file(segment), ec);
}

std::optional<RecordLayout> read_layout(const std::filesystem::path &segment, uint32_t key_size, uint32_t value_size,
                                        std::string &err)
{
    err.clear();
    const std::filesystem::path file = layout_file(segment);
    std::ifstream in(file);
    if (!in) {
        std::error_code ec;
        if (std::filesystem::exists(file, ec)) {
            err = file.string() + ": cannot read";
        }
        return std::nullopt;
    }
    std::stringstream text;
    text << in.rdbuf();
    const nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, false);
    RecordLayout layout;
    if (doc.is_discarded() || !doc.is_object() || doc.value("version", 0) != 1 || !doc.contains("key") ||
        !doc.contains("value") || !fields_from_json(doc["key"], layout.key) ||
        !fields_from_json(doc["value"], layout.value)) {
        err = file.string() + ": not a table layout of version 1";
        return std::nullopt;
    }
    if (doc.value("key_size", 0u) != key_size || doc.value("value_size", 0u) != value_size) {
        err = file.string() + ": written for key " + std::to_string(doc.value("key_size", 0u)) + " value " +
              std::to_string(doc.value("value_size", 0u)) + " bytes, the segment has key " + std::to_string(key_size) +
              " value " + std::to_string(value_size);
        return std::nullopt;
    }
    if (auto why = validate_layout(layout, key_size, value_size); !why.empty()) {
        err = file.string() + ": " + why;
        return std::nullopt;
    }
    return layout;
}

std::string hex(const uint8_t *bytes, std::size_t n)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    s.reserve(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
        s += digits[bytes[i] >> 4];
        s += digits[bytes[i] & 15];
    }
    return s;
}

nlohmann::ordered_json field_value(const Field &f, const uint8_t *bytes)
{
    const uint8_t *p = bytes + f.offset;
    switch (f.type) {
    case FieldType::u8:
        return p[0];
    case FieldType::u16:
        return load<uint16_t>(p);
    case FieldType::u32:
        return load<uint32_t>(p);
    case FieldType::u64:
        return load<uint64_t>(p);
    case FieldType::be16:
        return ntohs(load<uint16_t>(p));
    case FieldType::be32:
        return ntohl(load<uint32_t>(p));
    case FieldType::be64:
        return be64toh(load<uint64_t>(p));
    case FieldType::ipv4:
        return address_text(AF_INET, p);
    case FieldType::ipv6:
        return address_text(AF_INET6, p);
    case FieldType::mac:
        return net::mac_text(p);
    case FieldType::bytes:
        break;
    }
    return hex(p, f.size);
}

nlohmann::ordered_json decode_fields(const std::vector<Field> &fields, const uint8_t *bytes)
{
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    for (const Field &f : fields) {
        out[f.name] = field_value(f, bytes);
    }
    return out;
}

} // namespace serpens::state
