// GNU-style option walking shared by the daemon's flags and the CLI's local verbs:
// `--name=value`, `--name value`, flags, and positional words. Each caller keeps its own
// switch over names; this only splits tokens and consumes values.
export interface ArgToken {
  /** The option name without an inline value (`--a=b` gives `--a`), or the word itself. */
  name: string;
  /** The token as given. */
  raw: string;
  /** Consumes the option's value (inline or the next argument); throws when there is none. */
  value(): string;
  /** Refuses an inline value on a flag. */
  flag(): void;
}

export function* argTokens(argv: readonly string[], error: (message: string) => Error): Generator<ArgToken> {
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    let name = raw;
    let inline: string | undefined;
    const eq = raw.indexOf("=");
    if (raw.startsWith("--") && eq > 0) {
      inline = raw.slice(eq + 1);
      name = raw.slice(0, eq);
    }
    yield {
      name,
      raw,
      value: () => {
        const v = inline ?? argv[++i];
        if (v === undefined || v === "") throw error(`argument ${name}: expected one argument`);
        return v;
      },
      flag: () => {
        if (inline !== undefined) throw error(`argument ${name}: takes no value`);
      },
    };
  }
}
