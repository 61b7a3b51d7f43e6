# Sourced by ssmkit's scripts: puts a CUDA toolkit installed under /usr/local/cuda on PATH, so that
# CMake's check_language(CUDA) finds nvcc when the shell profile did not add it.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
