// The seam between the node controller and whatever runs VMs. Every driver (qemu, fake) implements
// HypervisorDriver and enforces the same state machine, so callers and the contract test treat them alike.

export type Accelerator = 'kvm' | 'tcg';

export type VmState = 'defined' | 'starting' | 'running' | 'stopping' | 'stopped' | 'crashed' | 'destroyed';

export interface HostForward {
  protocol: 'tcp' | 'udp';
  /** Host address to listen on; loopback unless the caller says otherwise. */
  hostAddress?: string;
  hostPort: number;
  guestPort: number;
}

export interface GuestForward {
  /** Address and port inside the user-mode network that the guest connects to. */
  guestAddress: string;
  guestPort: number;
  /** A QEMU chardev spec the connection is handed to, e.g. 'tcp:127.0.0.1:8775'. */
  target: string;
}

export type VmNetwork =
  | { kind: 'tap'; tapName: string }
  | { kind: 'user'; hostfwd?: HostForward[]; guestfwd?: GuestForward[] }
  | { kind: 'none' };

export interface VmSpec {
  /** The instance id (i-…); also the VM's name on the node. */
  id: string;
  vcpus: number;
  memoryMiB: number;
  /** The kernel QEMU loads itself; absent when the disk boots with its own boot loader (bootMode). */
  kernelPath?: string;
  initrdPath?: string;
  kernelCmdline: string;
  /** Firmware for a disk with its own boot loader: SeaBIOS (QEMU's default) or UEFI (OVMF). */
  bootMode?: 'legacy-bios' | 'uefi';
  /** The instance's qcow2 disk. The caller owns it: destroy leaves it in place. */
  diskPath: string;
  /** Boot from an EBS volume instead (storage/root-volume.ts): diskPath is then not used. */
  rootVolume?: VolumeAttachment;
  macAddress: string;
  network: VmNetwork;
  /** Per-instance directory for the QMP socket, pid file and console log. */
  workDir: string;
}

export interface VmInfo {
  id: string;
  state: VmState;
  pid?: number;
  accelerator: Accelerator | 'none';
  startedAt?: Date;
  /** What the VM was started with: a node that lost the VM's instance record still counts them. */
  vcpus: number;
  memoryMiB: number;
}

export interface StopOptions {
  /** Skip the graceful ACPI power-down and end the VM at once. */
  force?: boolean;
  /** How long the guest gets to power itself off before it is ended. */
  timeoutMs?: number;
}

/** A disk attached to a running VM after boot (EBS-style volumes): a file on this host, or an NBD export. */
export interface VolumeAttachment {
  volumeId: string;
  path?: string;
  format?: 'raw' | 'qcow2';
  /** A volume of the zone's storage host; TLS credentials (keys.psk) in `tls.credsDir`. */
  nbd?: { host: string; port: number; exportName: string; tls?: { credsDir: string; identity: string } };
}

export interface DetachOptions {
  /** How long the guest gets to let go of the disk. */
  timeoutMs?: number;
}

export interface HypervisorDriver {
  readonly name: 'qemu' | 'fake';
  accelerator(): Accelerator | 'none';
  create(spec: VmSpec): Promise<void>;
  start(id: string): Promise<void>;
  stop(id: string, opts?: StopOptions): Promise<void>;
  reboot(id: string): Promise<void>;
  destroy(id: string): Promise<void>;
  info(id: string): Promise<VmInfo | undefined>;
  list(): Promise<VmInfo[]>;
  consoleOutput(id: string): Promise<string>;
  // Optional capabilities: a driver that lacks one leaves it out, and callers go through the helpers
  // below, which answer UnsupportedOperationError instead of a TypeError.
  attachVolume?(id: string, volume: VolumeAttachment): Promise<void>;
  detachVolume?(id: string, volumeId: string, opts?: DetachOptions): Promise<void>;
  /** Volumes plugged into the VM now. */
  attachedVolumes?(id: string): Promise<string[]>;
}

export type VmOperation = 'create' | 'start' | 'stop' | 'reboot' | 'destroy' | 'attachVolume' | 'detachVolume';

export class HypervisorStateError extends Error {
  readonly vmId: string;
  readonly state: VmState;
  readonly operation: VmOperation;
  constructor(vmId: string, state: VmState, operation: VmOperation) {
    super(`cannot ${operation} VM ${vmId}: it is ${state}`);
    this.name = 'HypervisorStateError';
    this.vmId = vmId;
    this.state = state;
    this.operation = operation;
  }
}

export class UnsupportedOperationError extends Error {
  readonly driver: string;
  readonly operation: VmOperation;
  constructor(driver: string, operation: VmOperation) {
    super(`the ${driver} hypervisor driver does not support ${operation}`);
    this.name = 'UnsupportedOperationError';
    this.driver = driver;
    this.operation = operation;
  }
}

export class VmNotFoundError extends Error {
  readonly vmId: string;
  constructor(vmId: string) {
    super(`no VM ${vmId} on this node`);
    this.name = 'VmNotFoundError';
    this.vmId = vmId;
  }
}

/** Every state change a driver may make. Anything else is a driver bug and throws. */
export const TRANSITIONS: Readonly<Record<VmState, readonly VmState[]>> = {
  defined: ['starting', 'destroyed'],
  // A launch that fails returns the VM to where it was (defined, stopped or crashed).
  starting: ['running', 'defined', 'stopped', 'crashed'],
  // running -> stopped: the guest powered itself off.
  running: ['stopping', 'stopped', 'crashed', 'destroyed'],
  stopping: ['stopped', 'crashed', 'destroyed'],
  stopped: ['starting', 'destroyed'],
  // crashed -> stopped: the caller acknowledged the crash with stop().
  crashed: ['starting', 'stopped', 'destroyed'],
  destroyed: [],
};

/** The states in which each operation may be asked for. */
export const ALLOWED_IN: Readonly<Record<VmOperation, readonly VmState[]>> = {
  // create is asked of an id: allowed when the id is free or its previous VM was destroyed.
  create: ['destroyed'],
  start: ['defined', 'stopped', 'crashed'],
  // stop while stopping lets a caller escalate a slow graceful stop with force.
  stop: ['running', 'stopping', 'crashed'],
  reboot: ['running'],
  destroy: ['defined', 'running', 'stopping', 'stopped', 'crashed'],
  attachVolume: ['running'],
  detachVolume: ['running'],
};

export function canTransition(from: VmState, to: VmState): boolean {
  return TRANSITIONS[from].includes(to);
}

export function assertTransition(vmId: string, from: VmState, to: VmState): void {
  if (!canTransition(from, to)) {
    throw new Error(`illegal VM state change for ${vmId}: ${from} -> ${to}`);
  }
}

export function assertOperationAllowed(vmId: string, state: VmState, operation: VmOperation): void {
  if (!ALLOWED_IN[operation].includes(state)) throw new HypervisorStateError(vmId, state, operation);
}

export async function attachVolume(driver: HypervisorDriver, id: string, volume: VolumeAttachment): Promise<void> {
  if (!driver.attachVolume) throw new UnsupportedOperationError(driver.name, 'attachVolume');
  await driver.attachVolume(id, volume);
}

export async function detachVolume(driver: HypervisorDriver, id: string, volumeId: string, opts?: DetachOptions): Promise<void> {
  if (!driver.detachVolume) throw new UnsupportedOperationError(driver.name, 'detachVolume');
  await driver.detachVolume(id, volumeId, opts);
}

export class InvalidVmSpecError extends Error {
  constructor(vmId: string, problem: string) {
    super(`invalid VM spec for ${vmId}: ${problem}`);
    this.name = 'InvalidVmSpecError';
  }
}

/** Checks what every driver relies on; a driver adds its own limits on top. */
export function validateVmSpec(spec: VmSpec): void {
  const fail = (problem: string) => { throw new InvalidVmSpecError(spec.id, problem); };
  // The id names files and QEMU options on the node, so it must be a plain token.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(spec.id)) fail('id must be letters, digits, ".", "_" or "-"');
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > 255) fail('vcpus must be an integer from 1 to 255');
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 32) fail('memoryMiB must be an integer of at least 32');
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(spec.macAddress)) fail(`macAddress ${spec.macAddress} is not a MAC address`);
  if (spec.kernelPath === undefined && spec.bootMode === undefined) fail('either kernelPath or bootMode must be given');
  if (spec.bootMode !== undefined && spec.bootMode !== 'legacy-bios' && spec.bootMode !== 'uefi') fail(`bootMode ${String(spec.bootMode)} is not legacy-bios or uefi`);
  for (const [name, path] of [['kernelPath', spec.kernelPath], ['diskPath', spec.diskPath], ['workDir', spec.workDir], ['initrdPath', spec.initrdPath]] as const) {
    if (path !== undefined && !path.startsWith('/')) fail(`${name} must be an absolute path`);
  }
  if (spec.network.kind === 'tap' && !/^[A-Za-z0-9_.-]{1,15}$/.test(spec.network.tapName)) {
    fail(`tapName ${spec.network.tapName} is not a valid interface name`);
  }
}
