// Medians and number formats shared by every case's table.
export const median = (xs: number[]): number => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};


export const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : "–");
export const f3 = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : "–");
