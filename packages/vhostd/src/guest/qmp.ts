// A minimal QMP client (QEMU Machine Protocol over a unix socket): greeting, capabilities
// negotiation, then one command at a time; asynchronous events are skipped.
import net from "node:net";
import { waitFor } from "./wait.js";

export class Qmp {
  private buf = "";
  private waiting: Array<(msg: Record<string, any>) => void> = [];

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf("\n")) >= 0) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, any>;
        if (msg.event) continue;
        this.waiting.shift()?.(msg);
      }
    });
  }

  /** Connects (retrying while QEMU creates the socket) and leaves capabilities negotiation done. */
  static async connect(path: string, timeoutMs = 30_000): Promise<Qmp> {
    let sock: net.Socket | undefined;
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          const s = net.createConnection(path);
          s.once("connect", () => ((sock = s), resolve(true)));
          s.once("error", () => resolve(false));
        }),
      timeoutMs,
      `QMP socket ${path}`,
    );
    const q = new Qmp(sock!);
    await q.next(); // greeting
    await q.execute("qmp_capabilities");
    return q;
  }

  private next(): Promise<Record<string, any>> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Runs a command; resolves with its "return" value, rejects with QEMU's error description. */
  async execute(command: string, args?: Record<string, unknown>): Promise<any> {
    const reply = this.next();
    this.sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + "\n");
    const msg = await reply;
    if (msg.error) throw new Error(`QMP ${command}: ${msg.error.desc ?? JSON.stringify(msg.error)}`);
    return msg.return;
  }

  /** Migrates this QEMU's guest to the QEMU listening on `uri`; resolves with QEMU's own figures. */
  async migrate(uri: string, timeoutMs = 120_000): Promise<{ downtimeMs: number; totalMs: number }> {
    await this.execute("migrate", { uri });
    let info: any;
    await waitFor(
      async () => {
        info = await this.execute("query-migrate");
        if (info.status === "failed" || info.status === "cancelled") throw new Error(`migration ${info.status}: ${info["error-desc"] ?? ""}`);
        return info.status === "completed";
      },
      timeoutMs,
      "migration completed",
    );
    return { downtimeMs: info.downtime, totalMs: info["total-time"] };
  }

  close(): void {
    this.sock.destroy();
  }
}
