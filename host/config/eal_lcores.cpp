#include "config/eal_lcores.h"

#include "core/error.h"

#include <charconv>
#include <sched.h>
#include <string_view>

namespace serpens {
namespace {

constexpr unsigned max_lcore_id = 1023;

struct LcoreSyntaxError {
    std::string message;
};

unsigned parse_id(std::string_view text, std::string_view whole)
{
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || value > max_lcore_id) {
        throw LcoreSyntaxError{"'" + std::string(whole) + "' is not a list of lcore ids 0.." +
                               std::to_string(max_lcore_id) + " such as \"0-3,6\""};
    }
    return value;
}

// "0,2-4,7": what -l takes, and each lcore group of --lcores.
void add_list(std::string_view list, std::string_view whole, std::set<unsigned> &out)
{
    while (!list.empty()) {
        std::size_t comma = list.find(',');
        std::string_view item = list.substr(0, comma);
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
        std::size_t dash = item.find('-');
        unsigned low = parse_id(item.substr(0, dash), whole);
        unsigned high = dash == std::string_view::npos ? low : parse_id(item.substr(dash + 1), whole);
        if (low > high) {
            throw LcoreSyntaxError{"'" + std::string(whole) + "': range " + std::string(item) + " is empty"};
        }
        for (unsigned id = low; id <= high; ++id) {
            out.insert(id);
        }
    }
}

// "(0-3)@1,4,5@(6,7)": the lcore ids are what stands before each '@'.
void add_lcores_map(std::string_view map, std::set<unsigned> &out)
{
    int depth = 0;
    std::size_t start = 0;
    for (std::size_t i = 0; i <= map.size(); ++i) {
        char c = i < map.size() ? map[i] : ',';
        if (c == '(') {
            ++depth;
        } else if (c == ')') {
            --depth;
        } else if (c == ',' && depth == 0) {
            std::string_view element = map.substr(start, i - start);
            std::string_view lcores = element.substr(0, element.find('@'));
            if (lcores.size() >= 2 && lcores.front() == '(' && lcores.back() == ')') {
                lcores = lcores.substr(1, lcores.size() - 2);
            }
            add_list(lcores, map, out);
            start = i + 1;
        }
        if (depth < 0) {
            break;
        }
    }
    if (depth != 0) {
        throw LcoreSyntaxError{"'" + std::string(map) + "': unbalanced parentheses"};
    }
}

void add_mask(std::string_view mask, std::set<unsigned> &out)
{
    std::string_view whole = mask;
    if (mask.size() > 2 && mask[0] == '0' && (mask[1] == 'x' || mask[1] == 'X')) {
        mask.remove_prefix(2);
    }
    if (mask.empty()) {
        throw LcoreSyntaxError{"'" + std::string(whole) + "' is not a hexadecimal core mask"};
    }
    unsigned bit = 0;
    for (std::size_t i = mask.size(); i-- > 0; bit += 4) {
        char c = mask[i];
        int nibble = c >= '0' && c <= '9'   ? c - '0'
                     : c >= 'a' && c <= 'f' ? c - 'a' + 10
                     : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                            : -1;
        if (nibble < 0) {
            throw LcoreSyntaxError{"'" + std::string(whole) + "' is not a hexadecimal core mask"};
        }
        for (unsigned b = 0; b < 4; ++b) {
            if ((nibble >> b) & 1) {
                if (bit + b > max_lcore_id) {
                    throw LcoreSyntaxError{"'" + std::string(whole) + "' names lcores beyond " +
                                           std::to_string(max_lcore_id)};
                }
                out.insert(bit + b);
            }
        }
    }
}

// The value of option `name` at args[i] ("-l 0-1", "-l0-1", "--lcores=..."),
// advancing i past it; nullopt when args[i] is another option.
std::optional<std::string_view> option_value(const std::vector<std::string> &args, std::size_t &i,
                                             std::string_view name)
{
    std::string_view arg = args[i];
    if (arg.substr(0, name.size()) != name) {
        return std::nullopt;
    }
    std::string_view rest = arg.substr(name.size());
    bool long_option = name.substr(0, 2) == "--";
    if (rest.empty()) {
        if (i + 1 >= args.size()) {
            throw LcoreSyntaxError{"'" + std::string(name) + "' needs a value"};
        }
        return std::string_view(args[++i]);
    }
    if (long_option) {
        if (rest.front() != '=') {
            return std::nullopt; // another option that starts alike
        }
        return rest.substr(1);
    }
    return rest;
}

} // namespace

std::optional<unsigned> LcoreSet::first_worker() const
{
    for (unsigned id : enabled) {
        if (id != main) {
            return id;
        }
    }
    return std::nullopt;
}

std::string LcoreSet::list() const
{
    std::string text;
    for (unsigned id : enabled) {
        text += (text.empty() ? "" : ",") + std::to_string(id);
    }
    return text;
}

std::string LcoreSet::describe() const
{
    std::string workers;
    for (unsigned id : enabled) {
        if (id != main) {
            workers += (workers.empty() ? "" : ",") + std::to_string(id);
        }
    }
    return "main lcore " + std::to_string(main) + ", worker lcores " + (workers.empty() ? "none" : workers);
}

LcoreSet lcores_of_eal_args(const std::vector<std::string> &args, const std::string &file)
{
    LcoreSet set;
    std::optional<unsigned> main;
    bool listed = false;
    try {
        for (std::size_t i = 0; i < args.size(); ++i) {
            if (auto v = option_value(args, i, "--lcores")) {
                set.enabled.clear();
                add_lcores_map(*v, set.enabled);
                listed = true;
            } else if (auto v = option_value(args, i, "--main-lcore")) {
                main = parse_id(*v, *v);
            } else if (auto v = option_value(args, i, "--master-lcore")) {
                main = parse_id(*v, *v);
            } else if (args[i].rfind("--", 0) == 0) {
                continue;
            } else if (auto v = option_value(args, i, "-l")) {
                set.enabled.clear();
                add_list(*v, *v, set.enabled);
                listed = true;
            } else if (auto v = option_value(args, i, "-c")) {
                set.enabled.clear();
                add_mask(*v, set.enabled);
                listed = true;
            }
        }
    } catch (const LcoreSyntaxError &e) {
        throw ConfigError(file, "[eal] args: " + e.message);
    }
    if (!listed) {
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        if (sched_getaffinity(0, sizeof cpus, &cpus) == 0) {
            for (unsigned id = 0; id < CPU_SETSIZE && id <= max_lcore_id; ++id) {
                if (CPU_ISSET(id, &cpus)) {
                    set.enabled.insert(id);
                }
            }
        }
        if (set.enabled.empty()) {
            set.enabled.insert(0);
        }
    }
    if (set.enabled.empty()) {
        throw ConfigError(file, "[eal] args: the lcore list is empty");
    }
    set.main = main.value_or(*set.enabled.begin());
    if (!set.has(set.main)) {
        throw ConfigError(file, "[eal] args: --main-lcore " + std::to_string(set.main) + " is not in the lcore list " +
                                    set.list());
    }
    return set;
}

} // namespace serpens
