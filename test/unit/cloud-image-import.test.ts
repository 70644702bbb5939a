// Bring your own image (issue 10, item 5) through the admin API, with files qemu-img makes: a raw
// and a qcow2 disk with a boot record are imported (copied, checksummed, registered with their
// boot mode, private or public); a corrupt file, a qcow2 with a backing file or an external data
// file, one over the size limit, a file that is no disk, and a duplicate name are refused with a
// clear message, and leave no row and no file behind.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Hono } from 'hono';
import pino from 'pino';
import { openStore, type Store } from '../../src/store/store.ts';
import { createKeyResolver } from '../../src/auth/key-cache.ts';
import { ensureAdminAccount, type AdminCredentials } from '../../src/cloud/bootstrap.ts';
import { createAccountWithDefaults } from '../../src/cloud/provision.ts';
import { adminNotFound } from '../../src/cloud/admin-api.ts';
import { createImageAdminApi } from '../../src/cloud/images/image-admin-api.ts';
import { imageOperations } from '../../src/cloud/images/images.ts';
import { signAdminRequest } from '../../src/cli/admin-client.ts';
import { skipUnlessPresent } from '../helpers/prerequisites.ts';
import { callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';

const ENDPOINT = 'http://127.0.0.1:8773';
const REGION = 'ironbark-1';
const skip = skipUnlessPresent(spawnSync('qemu-img', ['--version']).status !== 0 ? 'qemu-img (Debian qemu-utils)' : undefined);

function qemuImg(...args: string[]): void {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `qemu-img ${args.join(' ')}: ${r.stderr}`);
}

/** A raw disk of `mib` MiB whose first sector ends with the boot signature. */
function bootableRaw(path: string, mib: number): void {
  writeFileSync(path, Buffer.alloc(0));
  spawnSync('truncate', ['-s', `${mib}M`, path]);
  const fd = openSync(path, 'r+');
  const sector = Buffer.alloc(512);
  sector.write('ironbark test boot code', 0);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  writeSync(fd, sector, 0, 512, 0);
  closeSync(fd);
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('ironbark admin image import, through the admin API', { skip }, () => {
  let store: Store;
  let admin: AdminCredentials;
  let app: Hono;
  let dataDir: string;
  let files: string;
  let imagesDir: string;
  let tenant: string;

  before(async () => {
    store = await openStore({ url: ':memory:' });
    dataDir = mkdtempSync(join(tmpdir(), 'ironbark-import-'));
    files = join(dataDir, 'files');
    imagesDir = join(dataDir, 'imported-images');
    spawnSync('mkdir', ['-p', files]);
    admin = await ensureAdminAccount(store, dataDir, { region: REGION, endpoint: ENDPOINT });
    tenant = (await createAccountWithDefaults(store, 'tenant')).account.id;
    app = new Hono();
    app.route('/admin', createImageAdminApi({ store, keys: createKeyResolver(store), log: pino({ level: 'silent' }), imagesDir }));
    app.all('/admin/*', adminNotFound);
  });
  after(async () => {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function call(method: string, path: string, body?: unknown) {
    const req = await signAdminRequest({ endpoint: ENDPOINT, region: REGION, ...admin }, method, path, { body });
    const res = await app.request(req.url, { method: req.method, headers: req.headers, body: req.body });
    return { status: res.status, json: await res.json() as any };
  }

  /** Starts an import and follows it to its end, as the CLI does. */
  async function importFile(body: Record<string, unknown>) {
    const started = await call('POST', '/image-imports', body);
    if (started.status !== 202) return started;
    let job = started.json.import;
    const deadline = Date.now() + 60_000;
    while (job.phase !== 'done' && job.phase !== 'failed') {
      assert.ok(Date.now() < deadline, 'the import finishes');
      await sleep(50);
      job = (await call('GET', `/image-imports/${job.id}`)).json.import;
    }
    return { status: 200, json: { import: job } };
  }

  const imageRows = () => store.db.selectFrom('images').selectAll().execute();
  async function expectRefused(body: Record<string, unknown>, message: RegExp) {
    const before = (await imageRows()).length;
    const r = await call('POST', '/image-imports', body);
    assert.equal(r.status, 400, JSON.stringify(r.json));
    assert.equal(r.json.error.code, 'InvalidParameterValue');
    assert.match(r.json.error.message, message);
    assert.equal((await imageRows()).length, before, 'no image row');
    assert.deepEqual(readdirSync(imagesDir, { withFileTypes: true }).filter((e) => e.name.includes('partial') || e.name.startsWith('.')).map((e) => e.name), [], 'no partial file');
  }

  it('imports a raw disk as a private image of an account, copied and checksummed, with its boot mode', async () => {
    const path = join(files, 'bios.img');
    bootableRaw(path, 4);
    const r = await importFile({ path, name: 'tenant-bios', description: 'a BIOS disk', account: 'tenant', bootMode: 'legacy-bios' });
    assert.equal(r.json.import.phase, 'done', JSON.stringify(r.json));
    const imageId = r.json.import.imageId;
    assert.match(imageId, /^ami-[0-9a-f]{17}$/);
    const row = await store.db.selectFrom('images').selectAll().where('id', '=', imageId).executeTakeFirstOrThrow();
    assert.equal(row.account_id, tenant);
    assert.equal(row.is_public, 0);
    assert.equal(row.boot_mode, 'legacy-bios');
    assert.equal(row.kernel_id, null);
    assert.equal(row.format, 'raw');
    assert.equal(row.sha256, sha256(path));
    assert.equal(Number(row.size_bytes), 4 * 1024 * 1024);
    assert.ok(row.location.startsWith(imagesDir), row.location);
    assert.equal(sha256(row.location), row.sha256, 'the cloud keeps its own copy');
    const seen = await callOperation(contextFor(store, tenant), imageOperations, 'DescribeImages', { ImageIds: [imageId] });
    assert.equal(seen.Images[0].BootMode, 'legacy-bios');
    assert.equal(seen.Images[0].Description, 'a BIOS disk');
    await expectEc2Error(callOperation(contextFor(store, admin.accountId), imageOperations, 'DescribeImages', { ImageIds: [imageId] }), 'InvalidAMIID.NotFound');
    const listed = await call('GET', '/images', undefined);
    assert.ok(listed.json.images.some((i: any) => i.id === imageId && i.bootMode === 'legacy-bios'));
  });

  it('imports a qcow2 disk as a public UEFI image of the cloud', async () => {
    const raw = join(files, 'uefi.raw');
    bootableRaw(raw, 8);
    const path = join(files, 'uefi.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, path);
    const r = await importFile({ path, name: 'cloud-uefi', public: true, bootMode: 'uefi' });
    assert.equal(r.json.import.phase, 'done', JSON.stringify(r.json));
    const row = await store.db.selectFrom('images').selectAll().where('id', '=', r.json.import.imageId).executeTakeFirstOrThrow();
    assert.equal(row.account_id, admin.accountId);
    assert.equal(row.is_public, 1);
    assert.equal(row.format, 'qcow2');
    assert.equal(row.boot_mode, 'uefi');
    const seen = await callOperation(contextFor(store, tenant), imageOperations, 'DescribeImages', { ImageIds: [row.id] });
    assert.equal(seen.Images[0].VirtualizationType, 'hvm');
  });

  it('refuses a qcow2 with a backing file, which could read host files', async () => {
    const path = join(files, 'backed.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', '/etc/hostname', '-F', 'raw', path, '4M');
    await expectRefused({ path, name: 'backed' }, /backing file \(\/etc\/hostname\).*read that file of the host/);
  });

  it('refuses a qcow2 with an external data file', async () => {
    const data = join(files, 'data.raw');
    const path = join(files, 'datafile.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', `data_file=${data}`, path, '4M');
    await expectRefused({ path, name: 'datafile' }, /external data file/);
  });

  it('refuses a disk over the size limit, the default one and a given one', async () => {
    const path = join(files, 'huge.qcow2');
    qemuImg('create', '-f', 'qcow2', path, '100G');
    await expectRefused({ path, name: 'huge' }, /100\.00 GiB, over the import limit of 64 GiB/);
    const small = join(files, 'twelve.img');
    bootableRaw(small, 12);
    await expectRefused({ path: small, name: 'twelve', maxSizeGiB: 0.01 }, /over the import limit of 0\.01 GiB/);
  });

  it('refuses corrupt files: a damaged qcow2, a truncated one, and data that is no disk', async () => {
    const raw = join(files, 'c.raw');
    bootableRaw(raw, 4);
    const damaged = join(files, 'damaged.qcow2');
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, damaged);
    // Overwrite the refcount table offset (header bytes 48-55) with a value past the end of the file.
    const fd = openSync(damaged, 'r+');
    writeSync(fd, Buffer.from([0, 0, 0, 0x7f, 0, 0, 0, 0]), 0, 8, 48);
    closeSync(fd);
    await expectRefused({ path: damaged, name: 'damaged' }, /not a readable disk image|is corrupt/);
    const truncated = join(files, 'truncated.qcow2');
    writeFileSync(truncated, readFileSync(damaged).subarray(0, 100));
    await expectRefused({ path: truncated, name: 'truncated' }, /not a readable disk image|is corrupt/);
    const noise = join(files, 'noise.img');
    writeFileSync(noise, createHash('sha512').update('noise').digest());
    await expectRefused({ path: noise, name: 'noise' }, /no boot record/);
    const vmdk = join(files, 'disk.vmdk');
    qemuImg('create', '-f', 'vmdk', vmdk, '4M');
    await expectRefused({ path: vmdk, name: 'vmdk' }, /is a vmdk image; only raw and qcow2/);
  });

  it('refuses a missing file, a relative path, a bad boot mode, an unknown account and a duplicate name', async () => {
    await expectRefused({ path: join(files, 'absent.img'), name: 'absent' }, /no such file/);
    await expectRefused({ path: 'relative.img', name: 'relative' }, /must be absolute/);
    const path = join(files, 'ok.img');
    bootableRaw(path, 1);
    await expectRefused({ path, name: 'bad-mode', bootMode: 'coreboot' }, /boot mode must be legacy-bios or uefi/);
    await expectRefused({ path, name: 'arm', architecture: 'arm64' }, /x86_64 guests only/);
    const unknown = await call('POST', '/image-imports', { path, name: 'orphan', account: 'nobody' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'InvalidAccount.NotFound');
    const dup = await call('POST', '/image-imports', { path, name: 'tenant-bios', account: tenant });
    assert.equal(dup.status, 400);
    assert.equal(dup.json.error.code, 'InvalidAMIName.Duplicate');
  });
});
