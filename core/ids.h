// Strong id types: a case id cannot be passed where an exhibit id is expected.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>

namespace bien {

template <typename Tag>
struct StrongId {
  int64_t value = 0;
  constexpr StrongId() = default;
  constexpr explicit StrongId(int64_t v) : value(v) {}
  constexpr auto operator<=>(const StrongId&) const = default;
};

using CaseId = StrongId<struct CaseIdTag>;
using ExhibitId = StrongId<struct ExhibitIdTag>;
using ScanId = StrongId<struct ScanIdTag>;

}  // namespace bien

template <typename Tag>
struct std::hash<bien::StrongId<Tag>> {
  size_t operator()(const bien::StrongId<Tag>& id) const noexcept {
    return std::hash<int64_t>()(id.value);
  }
};
