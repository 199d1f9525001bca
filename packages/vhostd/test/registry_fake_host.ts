// A VfHost that records what the registry asks of it (shared by registry and rpc tests).
import type { DeviceKind } from "@vhostd/proto";
import type { VfHost, VfRuntime, VfSpec } from "@vhostd/runtime";

/** Records what the registry asks of the host; can be told to fail. */
export class FakeHost implements VfHost {
  open_: VfSpec[] = [];
  closed: string[] = [];
  pfs: Array<[string, number, DeviceKind]> = [];
  failOpen: Error | undefined;
  shut = false;
  open(vf: VfSpec): void {
    if (this.failOpen) throw this.failOpen;
    this.open_.push(vf);
  }
  async close(dev: string): Promise<void> {
    this.closed.push(dev);
  }
  runtime(dev: string): VfRuntime | undefined {
    return this.open_.some((v) => v.dev === dev) ? { state: "connecting", connected: false, features: "0", protocolFeatures: "0", reconnects: 0, queues: [] } : undefined;
  }
  addPf(pf: string, switchId: number, kind: DeviceKind): void {
    this.pfs.push([pf, switchId, kind]);
  }
  removePf(pf: string): void {
    this.pfs = this.pfs.filter(([p]) => p !== pf);
  }
  async shutdown(): Promise<void> {
    this.shut = true;
  }
}
