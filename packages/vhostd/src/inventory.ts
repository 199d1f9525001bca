// The soft inventory: which PFs exist and which VF addresses each one has. With no
// hardware, this stands in for lspci + sriov_numvfs. VF n of a PF sits at the SR-IOV
// routing id RID(PF) + firstVfOffset + n * vfStride (bus<<8 | dev<<3 | fn, in the PF's
// PCI domain), formatted DDDD:BB:DD.F.
import { formatPciAddr, parsePciAddr, pciFromRid, pciRid } from "@vhostd/proto";
import { ConfigError, type PfConfig, type VhostdConfig } from "./config.js";

export interface PfInfo extends PfConfig {
  /** Address of VF 0 ("" when numVfs is 0). */
  firstVf: string;
}

/** Most VFs the whole inventory may describe (keeps the lookup table bounded). */
export const MAX_INVENTORY_VFS = 65536;

export class Inventory {
  private readonly pfs = new Map<string, PfInfo>();
  private readonly vfs = new Map<string, { pf: string; index: number }>();

  constructor(config: VhostdConfig) {
    const owner = new Map<string, string>(); // address -> what uses it
    const macs = new Map<string, string>();
    let total = 0;
    for (const pf of config.pfs) {
      if (owner.has(pf.dev)) throw new ConfigError(`PF ${pf.dev}: address already used by ${owner.get(pf.dev)}`);
      owner.set(pf.dev, `PF ${pf.dev}`);
    }
    for (const pf of config.pfs) {
      total += pf.numVfs;
      if (total > MAX_INVENTORY_VFS) throw new ConfigError(`inventory: more than ${MAX_INVENTORY_VFS} VFs in all`);
      const a = parsePciAddr(pf.dev)!;
      const base = pciRid(a) + pf.firstVfOffset;
      const last = base + (pf.numVfs - 1) * pf.vfStride;
      if (pf.numVfs > 0 && last > 0xffff) {
        throw new ConfigError(`PF ${pf.dev}: VF ${pf.numVfs - 1} would have routing id 0x${last.toString(16)}, beyond 0xffff`);
      }
      for (let n = 0; n < pf.numVfs; n++) {
        const vf = formatPciAddr(pciFromRid(a.domain, base + n * pf.vfStride));
        const prev = owner.get(vf);
        if (prev) throw new ConfigError(`PF ${pf.dev}: VF ${n} address ${vf} collides with ${prev}`);
        owner.set(vf, `VF ${n} of PF ${pf.dev}`);
        this.vfs.set(vf, { pf: pf.dev, index: n });
        const mac = deriveMac(pf.macPrefix, vf);
        const prevMac = macs.get(mac);
        if (prevMac) throw new ConfigError(`PF ${pf.dev}: derived MAC ${mac} of ${vf} collides with ${prevMac}`);
        macs.set(mac, vf);
      }
      this.pfs.set(pf.dev, { ...pf, firstVf: pf.numVfs > 0 ? formatPciAddr(pciFromRid(a.domain, base)) : "" });
    }
  }

  pf(dev: string): PfInfo | undefined {
    return this.pfs.get(dev);
  }

  allPfs(): PfInfo[] {
    return [...this.pfs.values()];
  }

  /** The PF and index of a VF address (canonical form), if the inventory has it. */
  vf(dev: string): { pf: PfInfo; index: number } | undefined {
    const v = this.vfs.get(dev);
    return v ? { pf: this.pfs.get(v.pf)!, index: v.index } : undefined;
  }

  vfAddress(pfDev: string, index: number): string | undefined {
    const pf = this.pfs.get(pfDev);
    if (!pf || index < 0 || index >= pf.numVfs) return undefined;
    const a = parsePciAddr(pf.dev)!;
    return formatPciAddr(pciFromRid(a.domain, pciRid(a) + pf.firstVfOffset + index * pf.vfStride));
  }

  /** The deterministic MAC of a VF. */
  defaultMac(vfDev: string): string {
    const v = this.vf(vfDev);
    return deriveMac(v?.pf.macPrefix ?? "52:54:00", vfDev);
  }
}

/** prefix:DD:BB:XX with DD = low byte of the PCI domain, BB = bus, XX = device<<3 | fn. */
export function deriveMac(prefix: string, dev: string): string {
  const a = parsePciAddr(dev)!;
  const h = (n: number) => n.toString(16).padStart(2, "0");
  return `${prefix}:${h(a.domain & 0xff)}:${h(a.bus)}:${h((a.device << 3) | a.fn)}`;
}
