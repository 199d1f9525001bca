export { sleep, waitFor } from "@vhostd/vhostd/guest";
