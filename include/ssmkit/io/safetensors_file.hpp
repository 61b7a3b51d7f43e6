// Reader of the safetensors format (huggingface/safetensors): an 8-byte little-endian header
// length n, n bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then
// the data section. The whole header is validated at open; tensors are then zero-copy views.
#pragma once

#include "ssmkit/core/error.hpp"
#include "ssmkit/core/host_tensor.hpp"
#include "ssmkit/core/tensor_view.hpp"
#include "ssmkit/io/json_document.hpp"
#include "ssmkit/io/mapped_file.hpp"
#include "ssmkit/io/safetensors_dtype.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ssmkit::io {

/// Largest header accepted, as in the reference implementation (MAX_HEADER_SIZE).
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

/// One tensor's entry in the header. `begin`/`end` are byte offsets into the data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<Index> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;

  Index numel() const {
    Index n = 1;
    for (Index s : shape)
      n *= s;
    return n;
  }
  std::uint64_t nbytes() const { return end - begin; }
};

/// A tensor's raw bytes inside the file.
struct ByteRange {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

/// An open safetensors file. Copies share the mapping; views stay valid while any copy lives.
class SafetensorsFile {
 public:
  /// Maps and validates the file at `path`.
  static SafetensorsFile open(const std::string& path) {
    auto file = std::make_shared<const MappedFile>(path);
    return SafetensorsFile(file, file->data(), file->size(), path);
  }

  /// Validates a safetensors image held in memory (`source` names it in errors).
  static SafetensorsFile from_bytes(std::vector<std::uint8_t> bytes,
                                    const std::string& source = "<memory>") {
    auto owned = std::make_shared<const std::vector<std::uint8_t>>(std::move(bytes));
    return SafetensorsFile(owned, owned->data(), owned->size(), source);
  }

  const std::string& source() const { return source_; }
  /// Every tensor, ordered by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  const TensorInfo& info(const std::string& name) const {
    const auto it = index_.find(name);
    SSMKIT_CHECK(it != index_.end(), where(name), "tensor", "present in the file", "missing");
    return tensors_[it->second];
  }

  ByteRange bytes(const std::string& name) const {
    const TensorInfo& t = info(name);
    return {data_ + t.begin, static_cast<std::size_t>(t.nbytes())};
  }

  /// Zero-copy view of tensor `name`: its dtype must be exactly T's, its rank `Rank`, and its
  /// data aligned for T (files written by the reference writers are).
  template <class T, int Rank>
  TensorView<const T, Rank> view(const std::string& name) const {
    using U = std::remove_cv_t<T>;
    const TensorInfo& t = info(name);
    SSMKIT_CHECK_EQ(where(name), "dtype (view does not convert; use read_as)", dtype_of<U>,
                    t.dtype);
    const Shape<Rank> shape = shape_of<Rank>(t);
    const std::uint8_t* p = data_ + t.begin;
    SSMKIT_CHECK(reinterpret_cast<std::uintptr_t>(p) % alignof(U) == 0, where(name),
                 "data alignment", std::to_string(alignof(U)) + " bytes",
                 "offset " + std::to_string(t.begin) + " into the data section");
    if constexpr (std::is_same_v<U, bool>)  // a bool byte other than 0/1 is undefined behaviour
      for (std::uint64_t i = 0; i < t.nbytes(); ++i)
        SSMKIT_CHECK(p[i] <= 1, where(name), "BOOL byte", "0 or 1", int{p[i]});
    return TensorView<const U, Rank>(reinterpret_cast<const U*>(p), shape, t.name.c_str());
  }

  /// Copy of tensor `name` converted to T: any floating dtype to a floating T, any integer dtype
  /// (or BOOL) to an integer T. A dtype of the other kind is refused, even for an empty tensor. So
  /// is any value T cannot hold: an integer out of T's range, or a finite float that would become
  /// inf in T (F64 1e300 as float, F32 1e5 as half); NaN and inf are kept.
  template <class T, int Rank>
  HostTensor<T, Rank> read_as(const std::string& name) const {
    const TensorInfo& t = info(name);
    constexpr bool floating = is_floating(dtype_of<T>);
    SSMKIT_CHECK(is_floating(t.dtype) == floating, where(name),
                 "dtype (read_as converts within a kind)",
                 std::string(floating ? "F64, F32, F16 or BF16" : "I64, I32, I16, I8, U8 or BOOL") +
                     " to read as " + std::string(name_of(dtype_of<T>)),
                 t.dtype);
    HostTensor<T, Rank> out(shape_of<Rank>(t), t.name.c_str());
    const std::uint8_t* p = data_ + t.begin;
    if constexpr (!std::is_same_v<T, bool>) {  // bool bytes need the 0/1 check below
      if (t.dtype == dtype_of<T>) {            // same type: one copy
        if (t.nbytes() > 0)
          std::memcpy(out.data(), p, static_cast<std::size_t>(t.nbytes()));
        return out;
      }
    }
    const std::size_t width = size_of(t.dtype);
    for (Index i = 0; i < out.numel(); ++i) {
      const std::uint8_t* e = p + static_cast<std::size_t>(i) * width;
      if (convert_element<T>(e, t.dtype, out.data() + i))
        continue;
      const std::string src(name_of(t.dtype)), dst(name_of(dtype_of<T>));
      const std::string value = floating ? ssmkit::detail::concat(detail::load_floating(e, t.dtype))
                                         : std::to_string(detail::load_integer(e, t.dtype));
      ssmkit::detail::throw_check(
          where(name), "element conversion",
          "a valid " + src + " value that " + dst + " holds" +
              (floating ? " as a finite number" : ""),
          "element " + std::to_string(i) + " = " + value + " (" + src + " to " + dst + ")");
    }
    return out;
  }

 private:
  SafetensorsFile(std::shared_ptr<const void> keepalive, const std::uint8_t* data, std::size_t size,
                  std::string source)
      : keepalive_(std::move(keepalive)), source_(std::move(source)) {
    parse(data, size);
  }

  std::string where(const std::string& tensor) const {
    return source_ + ": tensor '" + tensor + "'";
  }

  template <int Rank>
  Shape<Rank> shape_of(const TensorInfo& t) const {
    SSMKIT_CHECK_EQ(where(t.name), "rank", Rank, static_cast<int>(t.shape.size()));
    Shape<Rank> s{};
    // Indexed by Rank, not by the vector's size: GCC 13 cannot see the check above and warns of
    // a copy past the array.
    for (int i = 0; i < Rank; ++i)
      s[static_cast<std::size_t>(i)] = t.shape[static_cast<std::size_t>(i)];
    return s;
  }

  void parse(const std::uint8_t* file, std::size_t size) {
    SSMKIT_CHECK(size >= 8, source_, "file size", ">= 8 bytes (the header length)", size);
    const auto n = detail::load_unaligned<std::uint64_t>(file);
    SSMKIT_CHECK(n <= kMaxSafetensorsHeader, source_, "header length",
                 "<= " + std::to_string(kMaxSafetensorsHeader), n);
    SSMKIT_CHECK(n <= size - 8, source_, "header length",
                 "<= " + std::to_string(size - 8) + " (the bytes after it)", n);
    SSMKIT_CHECK(n >= 1 && file[8] == '{', source_, "header", "a JSON object starting with '{'",
                 n == 0 ? std::string("empty") : "first byte " + std::to_string(int{file[8]}));
    const auto header =
        parse_json(std::string_view(reinterpret_cast<const char*>(file + 8), n), source_);
    SSMKIT_CHECK(header.is_object(), source_, "header", "a JSON object", header.type_name());
    data_ = file + 8 + n;
    const std::uint64_t data_size = size - 8 - n;

    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__")
        parse_metadata(value);
      else
        tensors_.push_back(parse_entry(key, value, data_size));
    }
    for (std::size_t i = 0; i < tensors_.size(); ++i)
      index_.emplace(tensors_[i].name, i);

    // No two tensors may share bytes (zero-size tensors own none). Gaps between them are tolerated
    // (the reference reader rejects them): they cannot make a read go out of bounds.
    std::vector<const TensorInfo*> by_offset;
    for (const auto& t : tensors_)
      if (t.nbytes() > 0)
        by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < by_offset.size(); ++i)
      SSMKIT_CHECK(by_offset[i]->begin >= by_offset[i - 1]->end, where(by_offset[i]->name),
                   "data_offsets",
                   ">= " + std::to_string(by_offset[i - 1]->end) + " (the end of '" +
                       by_offset[i - 1]->name + "')",
                   by_offset[i]->begin);
  }

  void parse_metadata(const nlohmann::json& value) {
    const std::string arg = source_ + ": __metadata__";
    SSMKIT_CHECK(value.is_object(), arg, "type", "an object of strings", value.type_name());
    for (const auto& [k, v] : value.items()) {
      SSMKIT_CHECK(v.is_string(), arg + "['" + k + "']", "type", "string", v.type_name());
      metadata_.emplace(k, v.get<std::string>());
    }
  }

  /// A non-negative JSON integer that fits in int64 (nlohmann reads larger ones as floats).
  static std::uint64_t get_count(const nlohmann::json& v, const std::string& arg,
                                 const char* what) {
    SSMKIT_CHECK(v.is_number_unsigned(), arg, what, "a non-negative integer",
                 v.is_number_integer() ? v.dump() : std::string(v.type_name()));
    const auto x = v.get<std::uint64_t>();
    SSMKIT_CHECK(x <= static_cast<std::uint64_t>(std::numeric_limits<Index>::max()), arg, what,
                 "<= 2^63 - 1", x);
    return x;
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& e,
                         std::uint64_t data_size) const {
    const std::string arg = where(name);
    TensorInfo t;
    t.name = name;
    SSMKIT_CHECK(e.is_object(), arg, "entry", "an object", e.type_name());
    for (const auto& [k, v] : e.items()) {
      (void)v;
      SSMKIT_CHECK(k == "dtype" || k == "shape" || k == "data_offsets", arg, "field",
                   "dtype, shape or data_offsets", "'" + k + "'");
    }
    for (const char* field : {"dtype", "shape", "data_offsets"})
      SSMKIT_CHECK(e.contains(field), arg, "field", std::string(field), "missing");

    const auto& dt = e["dtype"];
    SSMKIT_CHECK(dt.is_string(), arg, "dtype", "a string", dt.type_name());
    const auto dtype = dtype_from_name(dt.get<std::string>());
    SSMKIT_CHECK(dtype.has_value(), arg, "dtype",
                 "F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL", dt.get<std::string>());
    t.dtype = *dtype;

    const auto& sh = e["shape"];
    SSMKIT_CHECK(sh.is_array(), arg, "shape", "an array", sh.type_name());
    Index numel = 1;
    for (std::size_t d = 0; d < sh.size(); ++d) {
      const std::string dim = "shape[" + std::to_string(d) + "]";
      const auto extent = static_cast<Index>(get_count(sh[d], arg, dim.c_str()));
      SSMKIT_CHECK(!ssmkit::detail::mul_overflows(numel, extent, &numel), arg, "element count",
                   "to fit in int64", sh.dump());
      t.shape.push_back(extent);
    }
    Index nbytes = 0;
    SSMKIT_CHECK(
        !ssmkit::detail::mul_overflows(numel, static_cast<Index>(size_of(t.dtype)), &nbytes), arg,
        "byte size", "to fit in int64", sh.dump());

    const auto& off = e["data_offsets"];
    SSMKIT_CHECK(off.is_array() && off.size() == 2, arg, "data_offsets", "an array [begin, end]",
                 off.dump());
    t.begin = get_count(off[0], arg, "data_offsets[0]");
    t.end = get_count(off[1], arg, "data_offsets[1]");
    SSMKIT_CHECK(t.begin <= t.end, arg, "data_offsets", "begin <= end", off.dump());
    SSMKIT_CHECK(t.end <= data_size, arg, "data_offsets end",
                 "<= " + std::to_string(data_size) + " (the data section size)", t.end);
    SSMKIT_CHECK(t.nbytes() == static_cast<std::uint64_t>(nbytes), arg, "byte range",
                 std::to_string(nbytes) + " bytes (shape " + sh.dump() + " of " +
                     std::string(name_of(t.dtype)) + ")",
                 t.nbytes());
    return t;
  }

  std::shared_ptr<const void> keepalive_;
  std::string source_;
  const std::uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace ssmkit::io
