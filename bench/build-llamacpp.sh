#!/usr/bin/env bash
# bench/build-llamacpp.sh [DIR] — build the llama.cpp reference tools the
# benchmarks compare with (llama-quantize, llama-imatrix, llama-perplexity,
# llama-bench, llama-embedding) from PyPI's llama-cpp-python source
# distribution, whose vendored llama.cpp is a pinned upstream tree; only PyPI
# is needed. Prints the directory to pass as LLAMA_BIN.
#
# ggml is built for this CPU's vector units by flags, not -march=native: some
# hypervisors advertise AMX and then fault on its instructions (SIGILL), so
# GGML_NATIVE is off, AMX is off, AVX/AVX2/FMA/F16C and the AVX-512 family are
# on (turn off with NO_AVX512=1 on CPUs without them).
#   env: LLAMACPP_PY_VERSION (0.3.36), PY (python3 with pip), JOBS (nproc)
set -euo pipefail
dir=${1:-${TMPDIR:-/tmp}/nibble-llamacpp}
ver=${LLAMACPP_PY_VERSION:-0.3.36}
py=${PY:-python3}
mkdir -p "$dir"
cd "$dir"
sdist=llama_cpp_python-$ver.tar.gz
[[ -f $sdist ]] || "$py" -m pip download --no-binary :all: --no-deps -d . "llama-cpp-python==$ver" >&2
[[ -d llama_cpp_python-$ver ]] || tar xzf "$sdist"
src=$dir/llama_cpp_python-$ver/vendor/llama.cpp
avx512=ON; [[ -n ${NO_AVX512:-} ]] && avx512=OFF
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512=$avx512 -DGGML_AVX512_VBMI=$avx512 -DGGML_AVX512_VNNI=$avx512 -DGGML_AVX512_BF16=$avx512 \
  -DGGML_AVX_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF >&2
cmake --build "$src/build" -j"${JOBS:-$(nproc)}" \
  --target llama-quantize llama-imatrix llama-bench llama-perplexity llama-embedding >&2
echo "$src/build/bin"
