#include "core/nf_context.h"

namespace serpens {

uint64_t *CounterBlock::get(const char *name)
{
    for (std::size_t i = 0; i < _size; ++i) {
        if (_names[i] == name) {
            return &_values[i];
        }
    }
    if (_size == capacity) {
        return nullptr;
    }
    _names[_size] = name;
    return &_values[_size++];
}

} // namespace serpens
