export { Qmp } from "@vhostd/vhostd/guest";
