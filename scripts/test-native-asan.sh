#!/usr/bin/env bash
# Runs the native test suites (the engine addon's and the front-end driver's, or the ava files
# given) on the ASan+UBSan addons (build:asan: production, test support and driver). Node itself is not instrumented: the sanitizer
# runtime is preloaded, and leak checking is off (node's own allocations at exit are not ours;
# the fuzz campaign checks leaks). SIGBUS is left to the addon's guard (sigbus_guard.h) and the
# default action, as without ASan.
set -euo pipefail
cd "$(dirname "$0")/.."
native=packages/native/build-asan/vhostd_native.node
native_test=packages/native/build-asan/vhostd_native_test.node
frontend=packages/frontend/build-asan/vhostd_frontend.node
for a in "$native" "$native_test" "$frontend"; do
  [ -f "$a" ] || { echo "no $a: run pnpm run build:asan first" >&2; exit 1; }
done
cxx=$(command -v clang++-14 || command -v clang++)
runtime=$("$cxx" -print-file-name=libclang_rt.asan-x86_64.so)
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(packages/native/dist/test/*.test.js packages/frontend/dist/test/*.test.js)
export VHOSTD_NATIVE_ADDON="$PWD/$native"
export VHOSTD_NATIVE_TEST_ADDON="$PWD/$native_test"
export VHOSTD_FRONTEND_ADDON="$PWD/$frontend"
export ASAN_OPTIONS="detect_leaks=0:handle_sigbus=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
LD_PRELOAD="$runtime" exec node_modules/.bin/ava "${files[@]}"
