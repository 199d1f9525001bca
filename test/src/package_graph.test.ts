// The package graph is the product's shape (docs/architecture.md): proto <- native <- runtime <-
// {vhostd, ha}, and the tools (test, bench) on top. Reads every workspace package.json and every
// import in its sources, and fails where the shape is broken: the two daemons depending on each
// other, proto on anything of ours, native on anything but proto, an import of a workspace
// package the importer does not declare, or a path into another package (its dist/ or "../..").
import test from "ava";
import fs from "node:fs";
import path from "node:path";
import { repoRoot } from "./harness/paths.js";

interface Pkg {
  name: string;
  dir: string;
  /** Workspace packages in dependencies and devDependencies. */
  deps: Set<string>;
}

/** The workspace's packages, from pnpm-workspace.yaml ("dir" or "dir/*" entries). */
function workspace(): Pkg[] {
  const yaml = fs.readFileSync(path.join(repoRoot, "pnpm-workspace.yaml"), "utf8");
  const block = /^packages:\n((?:[ \t]+-[^\n]*\n)+)/m.exec(yaml);
  if (!block) throw new Error("pnpm-workspace.yaml lists no packages");
  const dirs: string[] = [];
  for (const line of block[1]!.split("\n")) {
    const entry = /^\s+-\s+["']?([^"'\s]+)/.exec(line)?.[1];
    if (!entry) continue;
    if (entry.endsWith("/*")) {
      const parent = path.join(repoRoot, entry.slice(0, -2));
      for (const d of fs.readdirSync(parent).sort()) if (fs.existsSync(path.join(parent, d, "package.json"))) dirs.push(path.join(parent, d));
    } else dirs.push(path.join(repoRoot, entry));
  }
  const all = dirs.map((dir) => ({ dir, json: JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as Record<string, unknown> }));
  const names = new Set(all.map((p) => p.json.name as string));
  return all.map(({ dir, json }) => {
    const declared = { ...(json.dependencies as object | undefined), ...(json.devDependencies as object | undefined) };
    return { name: json.name as string, dir, deps: new Set(Object.keys(declared).filter((d) => names.has(d))) };
  });
}

/** TypeScript sources of a package (src/ and test/), without build output or dependencies. */
function sources(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name === "node_modules" || e.name === "dist" || e.name === "build") continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(ts|mts)$/.test(e.name) && !e.name.endsWith(".d.ts")) out.push(p);
    }
  };
  for (const sub of ["src", "test"]) if (fs.existsSync(path.join(dir, sub))) walk(path.join(dir, sub));
  return out;
}

/** Module specifiers of static imports/exports, dynamic import("...") and import.meta.resolve("..."). */
function specifiers(text: string): string[] {
  const re = /(?:\bfrom\s*|\bimport\s*|\bimport\(\s*|\bimport\.meta\.resolve\(\s*)["']([^"'\n]+)["']/g;
  return [...text.matchAll(re)].map((m) => m[1]!);
}

/** The workspace package a bare specifier names ("@vhostd/x/sub" -> "@vhostd/x"). */
function packageOf(spec: string): string {
  const parts = spec.split("/");
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
}

const pkgs = workspace();
const byName = new Map(pkgs.map((p) => [p.name, p]));

test("the workspace holds the packages the graph is made of", (t) => {
  for (const n of ["@vhostd/proto", "@vhostd/native", "@vhostd/runtime", "@vhostd/vhostd", "@vhostd/ha", "@vhostd/test"]) t.true(byName.has(n), n);
});

test("declared dependencies: proto on nothing of ours, native on proto only, runtime under both daemons, the daemons not on each other", (t) => {
  const deps = (n: string) => [...byName.get(n)!.deps].sort();
  t.deepEqual(deps("@vhostd/proto"), []);
  t.deepEqual(deps("@vhostd/native"), ["@vhostd/proto"]);
  for (const d of ["@vhostd/vhostd", "@vhostd/ha"]) t.true(byName.get(d)!.deps.has("@vhostd/runtime"), `${d} runs VFs on @vhostd/runtime`);
  t.false(byName.get("@vhostd/ha")!.deps.has("@vhostd/vhostd"), "the keeper does not depend on the control plane");
  t.false(byName.get("@vhostd/vhostd")!.deps.has("@vhostd/ha"), "the control plane does not depend on the keeper");
  for (const d of ["@vhostd/vhostd", "@vhostd/ha", "@vhostd/test", "@vhostd/bench"]) t.false(byName.get("@vhostd/runtime")!.deps.has(d), `runtime does not depend on ${d}`);
  // No cycle anywhere (a package reaching itself through its dependencies).
  const reaches = (from: string, seen = new Set<string>()): Set<string> => {
    for (const d of byName.get(from)?.deps ?? []) if (!seen.has(d)) reaches(d, seen.add(d));
    return seen;
  };
  for (const p of pkgs) t.false(reaches(p.name).has(p.name), `${p.name} depends on itself`);
});

test("every import of a workspace package is declared, and no import reaches into another package's directory", (t) => {
  const problems: string[] = [];
  for (const p of pkgs) {
    for (const file of sources(p.dir)) {
      const rel = path.relative(repoRoot, file);
      for (const spec of specifiers(fs.readFileSync(file, "utf8"))) {
        if (spec.startsWith(".")) {
          const target = path.resolve(path.dirname(file), spec);
          if (path.relative(p.dir, target).startsWith("..")) problems.push(`${rel}: "${spec}" leaves ${p.name}; import the package by name`);
          continue;
        }
        const dep = packageOf(spec);
        if (!byName.has(dep)) continue; // node: builtins and third-party packages
        if (dep === p.name) problems.push(`${rel}: "${spec}" imports its own package by name`);
        else if (!p.deps.has(dep)) problems.push(`${rel}: "${spec}" is not a declared dependency of ${p.name}`);
        if (/(^|\/)(dist|src)(\/|$)/.test(spec.slice(dep.length))) problems.push(`${rel}: "${spec}" reaches into ${dep}'s files; use what it exports`);
      }
    }
  }
  t.deepEqual(problems, []);
});
