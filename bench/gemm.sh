#!/usr/bin/env bash
# SGEMM backends on the shapes of the reference MLP: OpenBLAS as loaded,
# with OPENBLAS_CORETYPE forced, on one thread, and BLIS (if installed).
set -euo pipefail
dir=$(mktemp -d /tmp/fb-gemm-XXXXXX)
trap 'rm -rf "$dir"' EXIT
src="$(cd "$(dirname "$0")" && pwd)/gemm.c"
gcc -O2 "$src" -o "$dir/ob" $(pkg-config --cflags --libs openblas)
blis=/usr/lib/x86_64-linux-gnu/blis-openmp
[ -f "$blis/libblis.so" ] && gcc -O2 "$src" -o "$dir/blis" -I/usr/include/x86_64-linux-gnu/blis-openmp -L"$blis" -lblis -Wl,-rpath,"$blis"
echo "| shape (MxNxK) | OpenBLAS default | OpenBLAS SkylakeX | OpenBLAS 1 thread | BLIS |"
echo "|---|---|---|---|---|"
for s in "64 256 784" "64 128 256" "256 784 64" "512 512 512"; do
  a=$("$dir/ob" $s | awk '{print $2}')
  b=$(OPENBLAS_CORETYPE=SkylakeX "$dir/ob" $s | awk '{print $2}')
  c=$(OPENBLAS_NUM_THREADS=1 "$dir/ob" $s | awk '{print $2}')
  d=$([ -x "$dir/blis" ] && "$dir/blis" $s | awk '{print $2}' || echo n/a)
  echo "| ${s// /x} | $a | $b | $c | $d |"
done
echo
echo "GFLOP/s; OpenBLAS picked: $(cd "$dir" && printf '#include <stdio.h>\nchar*openblas_get_corename(void);int main(){puts(openblas_get_corename());}' > c.c && gcc c.c -o c -lopenblas && ./c)"
