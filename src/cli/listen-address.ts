// `HOST:PORT`, `:PORT`, `PORT` or `[v6]:PORT` into parts, with a sentence when it is wrong.
export function parseListenAddress(value: string, defaultHost = '127.0.0.1'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*))?:?(\d+)$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`"${value}" is not a listen address; use HOST:PORT, e.g. 127.0.0.1:8773`);
  }
  return { host: m[1] ?? (m[2] || defaultHost), port };
}
