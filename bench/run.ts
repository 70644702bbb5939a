// `npm run bench -- NAME`: runs bench/NAME.ts and prints its result as one JSON object on the last line.
const benches: Record<string, () => Promise<Record<string, unknown>>> = {
  api: async () => (await import('./api.ts')).benchApi(),
  launch: async () => (await import('./launch.ts')).benchLaunch(),
  placement: async () => (await import('./placement.ts')).benchPlacement(),
  network: async () => (await import('./network.ts')).benchNetwork(),
  limits: async () => (await import('./limits.ts')).benchLimits(),
  soak: async () => (await import('./soak.ts')).benchSoak(),
  xml: async () => (await import('./xml.ts')).benchXml(),
  storage: async () => (await import('./storage.ts')).benchStorage(),
};

const name = process.argv[2];
if (!name || !benches[name]) {
  process.stderr.write(`usage: npm run bench -- ${Object.keys(benches).join('|')}\n`);
  process.exit(2);
}
const result = await benches[name]!();
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
