// How the qemu driver starts a VM, by boot mode: a kernel the cloud gives (-kernel/-append), a disk
// with its own BIOS boot loader (SeaBIOS, QEMU's default: no firmware options), or one with a UEFI
// boot loader (OVMF code read-only in the first flash chip, the VM's own variables in the second).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildQemuArgs } from '../../src/node/qemu-driver.ts';
import { InvalidVmSpecError, validateVmSpec, type VmSpec } from '../../src/node/hypervisor.ts';
import { ensureUefiVars, OVMF_CODE, OVMF_VARS_TEMPLATE, UEFI_VARS_FILE } from '../../src/node/hypervisor/uefi-firmware.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';

const BASE: VmSpec = {
  id: 'i-0123456789abcdef0', vcpus: 1, memoryMiB: 256, kernelCmdline: 'console=ttyS0 root=/dev/vda',
  diskPath: '/var/lib/ironbark/node/i-0123456789abcdef0/disk.qcow2', macAddress: 'd2:0d:12:34:56:78',
  network: { kind: 'none' }, workDir: '/var/lib/ironbark/node/i-0123456789abcdef0',
};
const RUN = { accelerator: 'tcg' as const, machine: 'q35' as const, qmpSocket: '/run/q.sock', pidFile: '/run/q.pid', consoleLog: '/run/console.log' };

const valueOf = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

describe('qemu boot arguments', () => {
  it('a kernel image boots with -kernel, -append and -initrd', () => {
    const args = buildQemuArgs({ ...BASE, kernelPath: '/img/vmlinuz', initrdPath: '/img/initrd.img' }, RUN);
    assert.deepEqual(valueOf(args, '-kernel'), ['/img/vmlinuz']);
    assert.deepEqual(valueOf(args, '-append'), [BASE.kernelCmdline]);
    assert.deepEqual(valueOf(args, '-initrd'), ['/img/initrd.img']);
    assert.ok(!valueOf(args, '-drive').some((d) => d.includes('pflash')));
  });

  it('a legacy-bios disk boots through SeaBIOS: no kernel, no firmware options, the disk first', () => {
    const args = buildQemuArgs({ ...BASE, bootMode: 'legacy-bios' }, RUN);
    assert.deepEqual(valueOf(args, '-kernel'), []);
    assert.deepEqual(valueOf(args, '-append'), []);
    assert.deepEqual(valueOf(args, '-drive'), [`file=${BASE.diskPath},if=virtio,format=qcow2`]);
  });

  it('a uefi disk boots through OVMF: read-only code and the VM\'s own variable store', () => {
    const args = buildQemuArgs({ ...BASE, bootMode: 'uefi' }, { ...RUN, uefiVars: `${BASE.workDir}/uefi-vars.fd` });
    assert.deepEqual(valueOf(args, '-kernel'), []);
    assert.deepEqual(valueOf(args, '-drive'), [
      `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
      `if=pflash,format=raw,unit=1,file=${BASE.workDir}/uefi-vars.fd`,
      `file=${BASE.diskPath},if=virtio,format=qcow2`,
    ]);
  });

  it('a spec needs a kernel or a boot mode, and a known boot mode', () => {
    assert.throws(() => validateVmSpec(BASE), InvalidVmSpecError);
    assert.throws(() => validateVmSpec({ ...BASE, bootMode: 'coreboot' as never }), /bootMode coreboot/);
    validateVmSpec({ ...BASE, bootMode: 'uefi' });
    validateVmSpec({ ...BASE, kernelPath: '/img/vmlinuz' });
  });

  const noOvmf = existsSync(OVMF_CODE) && existsSync(OVMF_VARS_TEMPLATE) ? undefined : `${OVMF_VARS_TEMPLATE} (Debian ovmf)`;
  it('the variable store is made once per VM from the template and kept', { skip: skipUnlessPresent(noOvmf) }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ironbark-uefi-'));
    try {
      const vars = await ensureUefiVars(dir);
      assert.equal(vars, join(dir, UEFI_VARS_FILE));
      assert.deepEqual(await readFile(vars), await readFile(OVMF_VARS_TEMPLATE));
      await writeFile(vars, 'changed by the guest');
      assert.equal(await ensureUefiVars(dir), vars);
      assert.equal(await readFile(vars, 'utf8'), 'changed by the guest', 'kept across starts');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
