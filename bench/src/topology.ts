// Where the net benchmarks put things: the PF and VFs of the embedded inventory, the CPU of
// the front-end and of the back-end, and the front-end's and DPDK back-end's port strings.
// Shared by every case that runs a dpdk-testpmd front-end.
export const PF = "0000:af:00.2";
/** The net PF's VFs in the embedded inventory: 0000:af:04.5, 05.5, 06.5, ... */
export const VFS = Array.from({ length: 8 }, (_, i) => `0000:af:${(4 + i).toString(16).padStart(2, "0")}.5`);
export const FE_CPU = 0;
export const BE_CPU = 1;
export const FE_LCORES = `0@${FE_CPU},1@${FE_CPU}`;
export const BE_LCORES = `0@${BE_CPU},1@${BE_CPU}`;
export const mac = (i: number): string => `02:00:00:00:00:${(0x10 + i).toString(16)}`;

/** The front-end's virtio-user ports; they listen (server=1) and the back-end connects. */
export function feVdevs(socks: string[], qp: number): string[] {
  return socks.map((s, i) => `net_virtio_user${i},path=${s},queues=${qp},server=1,mac=${mac(i)}`);
}

/** DPDK's vhost PMD ports, connecting to the front-end's sockets. */
export function beVdevs(socks: string[], qp: number): string[] {
  return socks.map((s, i) => `net_vhost${i},iface=${s},queues=${qp},client=1`);
}

/** testpmd arguments of the one-way front-end: each port generates and sinks. */
export function flowgenArgs(size: number, qp: number): string[] {
  return [
    "--stats-period", "1", "--forward-mode=flowgen", "--auto-start", "--port-topology=paired", `--txpkts=${size}`,
    `--rxq=${qp}`, `--txq=${qp}`, "--total-num-mbufs=32768", `--eth-peer=0,${mac(1)}`, `--eth-peer=1,${mac(0)}`,
  ];
}
