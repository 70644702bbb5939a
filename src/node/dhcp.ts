// DHCP for one zone bridge: a dnsmasq that hands out only reserved MAC→IP pairs, so an instance
// always gets the address the cluster chose for it. dnsmasq runs as a daemon with a pid file in
// the state directory, so a restarted node agent adopts the running server instead of racing it.
import { readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, rmdir, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { runCommand } from './network-commands.ts';
import { writeFileIfChanged, writeFileAtomic } from './network-files.ts';
import { hostnameForIp, type Ipv4Range } from './network-addressing.ts';

export interface DhcpReservation {
  mac: string;
  ip: string;
}

export interface DhcpServerOptions {
  bridgeName: string;
  range: Ipv4Range;
  stateDir: string;
  netns?: string;
  /** Seconds; AWS's DHCP leases last an hour. */
  leaseSeconds?: number;
  dnsServers?: string[];
}

/** Where dnsmasq's hosts, leases, pid and log files for a node state directory live. */
export function dnsmasqRuntimeDir(stateDir: string): string {
  const root = process.env.IRONBARK_RUN_DIR ?? '/run/ironbark';
  return join(root, `dhcp-${createHash('sha256').update(stateDir).digest('hex').slice(0, 12)}`);
}

export class DhcpServer {
  readonly configPath: string;
  readonly hostsPath: string;
  readonly leasesPath: string;
  readonly pidPath: string;
  readonly logPath: string;
  private readonly opts: DhcpServerOptions;

  constructor(opts: DhcpServerOptions) {
    this.opts = opts;
    const base = join(dnsmasqRuntimeDir(opts.stateDir), opts.bridgeName);
    this.configPath = `${base}.dnsmasq.conf`;
    this.hostsPath = `${base}.dhcp-hosts`;
    this.leasesPath = `${base}.leases`;
    this.pidPath = `${base}.dnsmasq.pid`;
    this.logPath = `${base}.dnsmasq.log`;
  }

  /** Starts dnsmasq, or adopts the one already serving this bridge with the same configuration. */
  async start(reservations: DhcpReservation[]): Promise<void> {
    await this.letDnsmasqReachStateDir();
    await this.writeHosts(reservations);
    const configChanged = await writeFileIfChanged(this.configPath, this.renderConfig());
    const pid = await this.runningPid();
    if (pid !== undefined && !configChanged) {
      process.kill(pid, 'SIGHUP');
      return;
    }
    if (pid !== undefined) await this.stop();
    await this.launch();
  }

  /** Publishes the reservation list; dnsmasq re-reads its hosts file on SIGHUP. */
  async update(reservations: DhcpReservation[]): Promise<void> {
    await this.writeHosts(reservations);
    const pid = await this.runningPid();
    if (pid === undefined) await this.launch();
    else process.kill(pid, 'SIGHUP');
  }

  /**
   * Forgets any lease held by `mac` or on `ip`. dnsmasq refuses to hand a reserved address to a new
   * MAC while an old lease on it is unexpired, and has no release command of its own, so the
   * server is stopped, the lease file edited, and the server started again.
   */
  async release(entry: DhcpReservation): Promise<void> {
    const leases = await this.readLeases();
    const kept = leases.filter((l) => l.mac !== entry.mac && l.ip !== entry.ip);
    if (kept.length === leases.length) return;
    const wasRunning = (await this.runningPid()) !== undefined;
    await this.stop();
    await writeFileAtomic(this.leasesPath, kept.map((l) => l.line + '\n').join(''));
    if (wasRunning) await this.launch();
  }

  /** Leases dnsmasq has recorded: `expiry mac ip hostname client-id` per line. */
  async readLeases(): Promise<{ mac: string; ip: string; line: string }[]> {
    const text = await readFile(this.leasesPath, 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter((line) => line.trim())
      .map((line) => {
        const [, mac = '', ip = ''] = line.split(/\s+/);
        return { mac: mac.toLowerCase(), ip, line };
      });
  }

  async stop(): Promise<void> {
    const pid = await this.runningPid();
    if (pid !== undefined) {
      process.kill(pid, 'SIGTERM');
      if (!(await waitForExit(pid, 5000))) {
        process.kill(pid, 'SIGKILL');
        await waitForExit(pid, 2000);
      }
    }
    await rm(this.pidPath, { force: true });
  }

  /** Removes everything this server kept on disk. */
  async removeFiles(): Promise<void> {
    for (const path of [this.configPath, this.hostsPath, this.leasesPath, this.pidPath, this.logPath]) {
      await rm(path, { force: true });
    }
    // The runtime directory goes too once no other bridge of this node uses it.
    await rmdir(dirname(this.configPath)).catch(() => undefined);
  }

  /** The pid of the dnsmasq started with our configuration file, if it is still running. */
  async runningPid(): Promise<number | undefined> {
    const pid = Number((await readFile(this.pidPath, 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const args = cmdline.split('\0');
    const isOurs = args[0]?.endsWith('dnsmasq') && args.includes(`--conf-file=${this.configPath}`);
    return isOurs ? pid : undefined;
  }

  private async launch(): Promise<void> {
    await rm(this.pidPath, { force: true });
    // dnsmasq daemonizes only after it has bound its sockets, so a zero exit means it is serving.
    await runCommand('dnsmasq', [`--conf-file=${this.configPath}`], { netns: this.opts.netns });
  }

  private async writeHosts(reservations: DhcpReservation[]): Promise<void> {
    const lines = reservations.map((r) => `${r.mac},${r.ip},${hostnameForIp(r.ip)}\n`);
    await writeFileIfChanged(this.hostsPath, lines.join(''));
    await chmod(this.hostsPath, 0o644); // whatever the umask: dnsmasq re-reads it as 'nobody'
  }

  /**
   * dnsmasq drops root for 'nobody' (a guest-facing parser should not run as root) and re-reads
   * the hosts file after that, so 'nobody' must be able to reach it. The node's state directory
   * usually sits under a private (0700) data directory, so dnsmasq's files live under /run
   * instead, in a directory named after the state directory (two nodes on one host never share).
   */
  private async letDnsmasqReachStateDir(): Promise<void> {
    const dir = dirname(this.hostsPath);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    const { mode } = await stat(dir);
    if ((mode & 0o001) === 0) await chmod(dir, (mode & 0o7777) | 0o001);
  }

  private renderConfig(): string {
    const { bridgeName, range, leaseSeconds = 3600, dnsServers = [] } = this.opts;
    const lines = [
      `# Written by Ironbark for ${bridgeName} (${range.cidr}); rewritten on every set-up.`,
      'port=0', // DHCP only: no DNS listener to clash with the host's resolver
      'no-resolv',
      'no-hosts',
      'bind-interfaces',
      `interface=${bridgeName}`,
      `dhcp-range=${range.cidr.split('/')[0]},static,${range.netmask},${leaseSeconds}`,
      `dhcp-option=option:router,${range.gateway}`,
      ...(dnsServers.length ? [`dhcp-option=option:dns-server,${dnsServers.join(',')}`] : []),
      'dhcp-authoritative',
      `dhcp-hostsfile=${this.hostsPath}`,
      `dhcp-leasefile=${this.leasesPath}`,
      `pid-file=${this.pidPath}`,
      `log-facility=${this.logPath}`,
    ];
    return lines.join('\n') + '\n';
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await sleep(20);
  }
  return !isAlive(pid);
}

function isAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // A daemon that is not our child lingers as a zombie until init reaps it; that counts as gone.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}
