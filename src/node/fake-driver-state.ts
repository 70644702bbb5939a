// Simulated VMs that outlive the node controller, as QEMU processes do: the fake driver of a node
// controller keeps its VMs (spec and state) in a 0600 file in the node's data directory, written
// before each call that changed them returns, and a node controller that restarts (or was killed)
// finds them there again. Crash tests read the file for "no VM runs without a record" on the fake
// driver. A VM that was stopping when the node went away has finished stopping when it comes
// back, and one that was starting is running, as a real guest would be.
import { readFile } from 'node:fs/promises';
import { writePrivateFile } from '../store/private-files.ts';
import { FakeDriver, type FakeDriverOptions } from './fake-driver.ts';
import type { StopOptions, VmInfo, VmSpec, VmState } from './hypervisor.ts';

/** Where a node controller's fake driver keeps its VMs, in the node's state directory. */
export const FAKE_VMS_FILE = 'fake-vms.json';

export interface KeptVm { spec: VmSpec; state: VmState }

/** The VMs a state file holds (for tests and the operator), or none when there is no file. */
export async function readFakeVms(file: string): Promise<KeptVm[]> {
  try {
    return (JSON.parse(await readFile(file, 'utf8')) as { vms: KeptVm[] }).vms;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export class PersistentFakeDriver extends FakeDriver {
  private readonly kept = new Map<string, KeptVm>();
  private writing: Promise<void> = Promise.resolve();

  private constructor(private readonly file: string, opts: FakeDriverOptions, hook: { notify?: (info: VmInfo) => void }) {
    super({ ...opts, onStateChange: (info) => { hook.notify?.(info); opts.onStateChange?.(info); } });
  }

  /** The driver with the VMs the file holds (none when it does not exist yet). */
  static async open(file: string, opts: FakeDriverOptions = {}): Promise<PersistentFakeDriver> {
    const hook: { notify?: (info: VmInfo) => void } = {};
    const driver = new PersistentFakeDriver(file, opts, hook);
    // A damaged file throws: refusing to start keeps the agent from taking every VM for gone.
    const vms = await readFakeVms(file);
    for (const { spec, state } of vms) {
      await driver.revive(spec, state);
      driver.kept.set(spec.id, { spec: { ...spec }, state: (await driver.info(spec.id))!.state });
    }
    hook.notify = (info) => {
      const vm = driver.kept.get(info.id);
      if (info.state === 'destroyed') driver.kept.delete(info.id);
      else if (vm) vm.state = info.state;
    };
    return driver;
  }

  override async create(spec: VmSpec): Promise<void> {
    await super.create(spec);
    this.kept.set(spec.id, { spec: { ...spec }, state: (await this.info(spec.id))!.state });
    await this.flush();
  }

  override async start(id: string): Promise<void> { try { await super.start(id); } finally { await this.flush(); } }
  override async stop(id: string, opts?: StopOptions): Promise<void> { try { await super.stop(id, opts); } finally { await this.flush(); } }
  override async destroy(id: string): Promise<void> { try { await super.destroy(id); } finally { await this.flush(); } }

  /** Brings a kept VM back in the state its guest would be in now. */
  private async revive(spec: VmSpec, state: VmState): Promise<void> {
    await super.create(spec);
    if (state === 'defined') return;
    await super.start(spec.id);
    if (state === 'stopped' || state === 'stopping') await super.stop(spec.id, { force: true });
    else if (state === 'crashed') this.simulateCrash(spec.id);
  }

  /** Writes the VMs as they are now; resolves once that is on disk (a failed write rejects). */
  private flush(): Promise<void> {
    const text = JSON.stringify({ vms: [...this.kept.values()] }, null, 1) + '\n';
    const write = this.writing.catch(() => undefined).then(() => writePrivateFile(this.file, text, { sync: false }));
    this.writing = write;
    return write;
  }
}
