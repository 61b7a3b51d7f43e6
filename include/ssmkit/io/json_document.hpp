// Strict JSON parsing for the files ssmkit reads (safetensors headers, config.json, shard indexes):
// nlohmann-json (RFC 8259, UTF-8 validated) plus a nesting limit and a duplicate-key check.
#pragma once

#include "ssmkit/core/error.hpp"
#include "ssmkit/io/mapped_file.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace ssmkit::io {

/// Deepest object/array nesting accepted; none of ssmkit's formats needs more than a handful.
inline constexpr int kMaxJsonDepth = 64;

/// Parses `text` as one JSON value. Throws ssmkit::Error naming `source` on malformed JSON,
/// nesting deeper than kMaxJsonDepth, or a key repeated inside one object: nlohmann keeps one of
/// two duplicate keys silently, and a safetensors header with two entries of one name would
/// otherwise hide a tensor.
inline nlohmann::json parse_json(std::string_view text, const std::string& source) {
  // One set of keys per open object; arrays push an empty set that never receives keys.
  std::vector<std::set<std::string>> open_keys;
  std::string duplicate;
  const auto callback = [&](int depth, nlohmann::json::parse_event_t event,
                            nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start || event == E::array_start) {
      if (depth >= kMaxJsonDepth)
        ssmkit::detail::throw_check(source, "JSON nesting depth",
                                    "<= " + std::to_string(kMaxJsonDepth), "deeper");
      open_keys.emplace_back();
    } else if (event == E::object_end || event == E::array_end) {
      open_keys.pop_back();
    } else if (event == E::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!open_keys.back().insert(key).second)
        ssmkit::detail::throw_check(source, "JSON object keys", "unique", "'" + key + "' twice");
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    ssmkit::detail::throw_check(source, "content", "valid JSON", e.what());
  }
}

/// Reads the file at `path` (a regular file of at most `max_bytes`) and parses it with parse_json.
inline nlohmann::json read_json_file(const std::string& path,
                                     std::uintmax_t max_bytes = 16u << 20) {
  // Mapped, not streamed: MappedFile rejects directories and FIFOs before reading a byte.
  const MappedFile file(path);
  SSMKIT_CHECK(file.size() <= max_bytes, path, "file size",
               "<= " + std::to_string(max_bytes) + " bytes", file.size());
  return parse_json(std::string_view(reinterpret_cast<const char*>(file.data()), file.size()),
                    path);
}

/// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
inline bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  while (i < s.size()) {
    const unsigned c = byte(i);
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // range of the first continuation byte
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      lo = c == 0xE0 ? 0xA0 : 0x80;
      hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      lo = c == 0xF0 ? 0x90 : 0x80;
      hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
      return false;
    }
    if (s.size() - i < len)
      return false;
    for (std::size_t k = 1; k < len; ++k) {
      const unsigned b = byte(i + k);
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF))
        return false;
    }
    i += len;
  }
  return true;
}

}  // namespace ssmkit::io
