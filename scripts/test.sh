#!/usr/bin/env bash
# Builds everything, runs every ava test (unit and end-to-end) and ends with the
# "N passed, N failed" line CI reads. Extra arguments go to ava (e.g. a file glob).
set -uo pipefail
cd "$(dirname "$0")/.."
pnpm run -s build || { echo "0 passed, 1 failed"; exit 1; }
out=$(mktemp)
pnpm exec ava --tap "$@" | tee "$out"
rc=${PIPESTATUS[0]}
pass=$(awk '/^# pass /{print $3}' "$out"); fail=$(awk '/^# fail /{print $3}' "$out"); skip=$(awk '/^# skip /{print $3}' "$out")
todo=$(awk '/^# todo /{print $3}' "$out")
if [ "$fail" != "" ] && [ "$fail" != "0" ]; then
  # CI shows the start and the end of a long log: repeat each failure's assertion here, at the end.
  echo "# failures again (their logs are above):"
  awk '/^not ok /{on=1; print; next} on && /^  ---$/{y=1} on && y{print} on && /^  \.\.\.$/{on=0; y=0}' "$out" | head -200
fi
rm -f "$out"
pass=${pass:-0}; fail=${fail:-0}
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi   # ava itself failed (load error, timeout)
# Fuzz smoke: the committed corpus and crash inputs replayed under ASan+UBSan, then each
# target fuzzed for a few seconds (packages/native/fuzz/run.mjs); counted as one test. Only on a
# full run (no ava arguments).
if [ $# -eq 0 ]; then
  if node packages/native/fuzz/run.mjs --smoke; then pass=$((pass + 1)); else fail=$((fail + 1)); rc=1; echo "not ok - fuzz smoke (pnpm fuzz:smoke)"; fi
fi
echo "${pass} passed, ${fail} failed${skip:+, ${skip} skipped}${todo:+, ${todo} todo}"
exit "$rc"
