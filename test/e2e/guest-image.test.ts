// Boots the default guest image under real QEMU (TCG) against an IMDSv2-style metadata
// server on loopback, then checks the console, SSH with the served key, a clean ACPI
// power-off, and that a file written over SSH is on the disk afterwards. A second test runs
// the guest's metadata client on the host to check its IMDSv1 fallback.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import { DEFAULT_RECIPE_SCRIPT, ensureDefaultGuestImage, type GuestImage } from '../../src/node/guest-image.ts';

const execFileAsync = promisify(execFile);
const IMAGE_RECIPE_DIR = dirname(DEFAULT_RECIPE_SCRIPT);

const INSTANCE_ID = `i-${randomBytes(9).toString('hex').slice(0, 17)}`;
const HOSTNAME = 'ip-169-254-0-15.ironbark.internal';
const USER_DATA = '#!/bin/sh\necho hello-from-userdata\n';

let workDir = '';
let image: GuestImage;
let qemu: ChildProcess | undefined;
const servers: Server[] = [];

interface ImdsRequest {
  method: string;
  url: string;
  token?: string;
  tokenValid: boolean;
}

async function freePort(): Promise<number> {
  const server = createTcpServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  server.close();
  await once(server, 'close');
  return port;
}

/** An IMDS look-alike: with `v2Only`, GETs need a token from PUT /latest/api/token; else PUT is refused. */
function serveMetadata(metadata: Record<string, string>, mode: 'v2Only' | 'v1Only', requests: ImdsRequest[]): Server {
  const issuedTokens = new Set<string>();
  const server = createServer((req: IncomingMessage, res) => {
    const token = req.headers['x-aws-ec2-metadata-token'];
    const seen = { method: req.method ?? '', url: req.url ?? '', token: typeof token === 'string' ? token : undefined, tokenValid: false };
    seen.tokenValid = seen.token !== undefined && issuedTokens.has(seen.token);
    requests.push(seen);
    if (req.method === 'PUT' && req.url === '/latest/api/token') {
      if (mode === 'v1Only') {
        res.writeHead(405).end();
        return;
      }
      if (!req.headers['x-aws-ec2-metadata-token-ttl-seconds']) {
        res.writeHead(400).end();
        return;
      }
      const issued = randomBytes(24).toString('base64url');
      issuedTokens.add(issued);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(issued);
      return;
    }
    if (mode === 'v2Only' && !seen.tokenValid) {
      res.writeHead(401).end();
      return;
    }
    const body = req.method === 'GET' ? metadata[req.url ?? ''] : undefined;
    if (body === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
  });
  servers.push(server);
  return server;
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (qemu && qemu.exitCode !== null) throw new Error(`QEMU exited (${qemu.exitCode}) while waiting for ${what}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(200);
  }
}

/** Sends one QMP command after the capabilities handshake and resolves with QEMU's reply. */
async function qmpCommand(socketPath: string, command: string): Promise<unknown> {
  const socket = connect(socketPath);
  socket.setEncoding('utf8');
  const replies: Record<string, unknown>[] = [];
  let buffer = '';
  const waiters: (() => void)[] = [];
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) replies.push(JSON.parse(line));
    waiters.splice(0).forEach((wake) => wake());
  });
  const next = async (key: string) => {
    for (;;) {
      const index = replies.findIndex((reply) => key in reply);
      if (index >= 0) return replies.splice(index, 1)[0];
      await new Promise<void>((wake) => waiters.push(wake));
    }
  };
  try {
    await next('QMP');
    socket.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n');
    await next('return');
    socket.write(JSON.stringify({ execute: command }) + '\n');
    return await next('return');
  } finally {
    socket.end();
  }
}

before(async () => {
  const started = Date.now();
  image = await ensureDefaultGuestImage({
    cacheDir: process.env.IRONBARK_IMAGE_CACHE,
    onProgress: ({ step, total, message }) => process.stderr.write(`image ${step}/${total} ${message}\n`),
  });
  process.stderr.write(`guest image ready in ${Date.now() - started} ms: ${image.dir}\n`);
  workDir = await mkdtemp(join(tmpdir(), 'ironbark-guest-image-'));
});

after(async () => {
  if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
    qemu.kill('SIGKILL');
    await once(qemu, 'exit');
  }
  for (const server of servers) if (server.listening) await new Promise((done) => server.close(done));
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

test('default guest image boots, reads IMDSv2 metadata, serves SSH and powers off cleanly', { timeout: 300_000 }, async (t) => {
  assert.match(image.manifest.fingerprint, /^[0-9a-f]{64}$/);
  for (const name of ['vmlinuz', 'initrd.img', 'rootfs.img']) {
    assert.match(image.manifest.files[name].sha256, /^[0-9a-f]{64}$/, `${name} has a sha256 in the manifest`);
  }
  assert.match(image.cmdline, /root=\/dev\/vda/);
  assert.match(image.cmdline, /console=ttyS0/);

  const keyPath = join(workDir, 'id_ed25519');
  await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'guest-image-test', '-f', keyPath]);
  const publicKey = (await readFile(`${keyPath}.pub`, 'utf8')).trim();

  const imdsRequests: ImdsRequest[] = [];
  const imds = serveMetadata(
    {
      '/latest/meta-data/instance-id': INSTANCE_ID,
      '/latest/meta-data/local-hostname': HOSTNAME,
      '/latest/meta-data/public-keys/0/openssh-key': publicKey,
      '/latest/user-data': USER_DATA,
    },
    'v2Only',
    imdsRequests,
  );
  imds.listen(0, '127.0.0.1');
  await once(imds, 'listening');
  const imdsPort = (imds.address() as { port: number }).port;

  // slirp's guestfwd to a chardev carries one connection for the whole run; a command runs
  // once per guest connection, so each metadata request gets its own TCP connection here.
  const bridge = join(workDir, 'imds-bridge.mjs');
  await writeFile(
    bridge,
    [
      "import { connect } from 'node:net';",
      "const upstream = connect(Number(process.argv[2]), '127.0.0.1');",
      'process.stdin.pipe(upstream);',
      'upstream.pipe(process.stdout);',
      "upstream.on('close', () => process.exit(0));",
      "upstream.on('error', () => process.exit(1));",
    ].join('\n'),
  );

  const overlay = join(workDir, 'root.qcow2');
  await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', image.rootfs, '-F', 'raw', overlay]);
  const sshPort = await freePort();
  const consolePath = join(workDir, 'console.log');
  const qmpPath = join(workDir, 'qmp.sock');
  const netdev = [
    'user,id=n0,net=169.254.0.0/16',
    `hostfwd=tcp:127.0.0.1:${sshPort}-:22`,
    `guestfwd=tcp:169.254.169.254:80-cmd:${process.execPath} ${bridge} ${imdsPort}`,
  ].join(',');
  const args = [
    '-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-m', '256', '-smp', '1',
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-kernel', image.kernel,
    ...(image.initrd ? ['-initrd', image.initrd] : []),
    '-append', image.cmdline,
    '-drive', `file=${overlay},if=virtio,format=qcow2`,
    '-netdev', netdev,
    '-device', 'virtio-net-pci,netdev=n0,romfile=',
    '-serial', `file:${consolePath}`,
    '-qmp', `unix:${qmpPath},server=on,wait=off`,
  ];
  const bootStarted = Date.now();
  qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let qemuStderr = '';
  qemu.stderr!.setEncoding('utf8').on('data', (chunk: string) => (qemuStderr += chunk));
  const readConsole = () => readFile(consolePath, 'utf8').catch(() => '');

  try {
    await waitFor('the instance-id line on the console', 120_000, async () =>
      (await readConsole()).includes(`ironbark-guest: instance-id=${INSTANCE_ID}`) ? true : undefined,
    );
    const consoleLineMs = Date.now() - bootStarted;

    const token = imdsRequests.find((r) => r.method === 'PUT' && r.url === '/latest/api/token');
    assert.ok(token, 'the guest asked for an IMDSv2 session token');
    const gets = imdsRequests.filter((r) => r.method === 'GET');
    assert.ok(gets.some((r) => r.url === '/latest/meta-data/instance-id'));
    assert.ok(gets.every((r) => r.tokenValid), 'every GET carried the session token');

    await waitFor('the user-data output on the console', 60_000, async () =>
      (await readConsole()).includes('hello-from-userdata') ? true : undefined,
    );

    const ssh = (command: string) =>
      execFileAsync('ssh', [
        '-i', keyPath, '-p', String(sshPort),
        '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
        '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR',
        'root@127.0.0.1', command,
      ], { timeout: 30_000 });
    const answer = await waitFor('SSH to answer', 60_000, async () => {
      try {
        return (await ssh('echo ok; uname -r; hostname; stat -c %a /root/.ssh/authorized_keys')).stdout;
      } catch {
        return undefined;
      }
    });
    const sshMs = Date.now() - bootStarted;
    assert.deepEqual(answer.trim().split('\n'), ['ok', image.manifest.kernel.release, HOSTNAME, '600']);

    // Written without an explicit sync: the clean shutdown must flush it to the disk.
    await ssh('echo kept-across-stop > /root/persisted.txt');

    t.diagnostic(`boot to instance-id console line: ${consoleLineMs} ms; boot to SSH answering: ${sshMs} ms`);

    const powerdownAt = Date.now();
    await qmpCommand(qmpPath, 'system_powerdown');
    const exited = once(qemu, 'exit');
    const [code] = (await Promise.race([exited, sleep(60_000, undefined, { ref: false }).then(() => ['timeout'])])) as [number | string];
    assert.equal(code, 0, `QEMU exits by itself after system_powerdown (stderr: ${qemuStderr.trim()})`);
    process.stderr.write(`power-off took ${Date.now() - powerdownAt} ms\n`);
    assert.match(await readConsole(), /ironbark-guest: shutting down/);

    // Read the file back from the guest's disk on the host side (debugfs reads the raw image).
    const flat = join(workDir, 'root.raw');
    await execFileAsync('qemu-img', ['convert', '-O', 'raw', overlay, flat]);
    const { stdout: persisted } = await execFileAsync('debugfs', ['-R', 'cat /root/persisted.txt', flat]);
    assert.equal(persisted.trim(), 'kept-across-stop');
    // e2fsck -n exits non-zero (and execFile rejects) on any error or a journal left to replay.
    await execFileAsync('e2fsck', ['-fn', flat]);
  } catch (err) {
    process.stderr.write(`console so far:\n${await readConsole()}\nqemu stderr: ${qemuStderr}\n`);
    throw err;
  }
});

test('guest metadata client falls back to IMDSv1 GETs when the token PUT is refused', async () => {
  // The guest's client script, run on the host under the same busybox the image ships.
  const busybox = (await execFileAsync('dpkg', ['-L', 'busybox-static'])).stdout.split('\n').find((p) => /\/s?bin\/busybox$/.test(p));
  assert.ok(busybox, 'busybox-static is installed');
  const binDir = join(workDir, 'busybox-bin');
  await mkdir(binDir);
  for (const applet of ['sh', 'nc', 'wget', 'timeout', 'tr', 'sed', 'printf', 'cat', 'mkdir', 'dirname']) {
    await symlink(busybox, join(binDir, applet));
  }
  const requests: ImdsRequest[] = [];
  const server = serveMetadata({ '/latest/meta-data/instance-id': 'i-0123456789abcdef0' }, 'v1Only', requests);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const env = {
    PATH: binDir,
    IMDS_HOST: '127.0.0.1',
    IMDS_PORT: String((server.address() as { port: number }).port),
    IMDS_TOKEN_FILE: join(workDir, 'imds-v1', 'token'),
  };
  const client = join(IMAGE_RECIPE_DIR, 'rootfs/usr/libexec/ironbark/imds');
  const imds = (path: string) => execFileAsync(join(binDir, 'sh'), [client, path], { env, timeout: 20_000 });

  assert.equal((await imds('meta-data/instance-id')).stdout, 'i-0123456789abcdef0');
  await assert.rejects(imds('meta-data/no-such-item'), 'a missing item is an error, not empty output');
  assert.equal(requests.filter((r) => r.method === 'PUT').length, 1, 'the refused PUT is not retried within the boot');
  assert.deepEqual(
    requests.filter((r) => r.method === 'GET').map((r) => [r.url, r.token]),
    [
      ['/latest/meta-data/instance-id', undefined],
      ['/latest/meta-data/no-such-item', undefined],
    ],
  );
});
