// The safetensors format (huggingface/safetensors): the reader (SafetensorsFile, zero-copy
// views and converting reads) and the writer (SafetensorsWriter).
#pragma once

#include "ssmkit/io/safetensors_file.hpp"
#include "ssmkit/io/safetensors_writer.hpp"
