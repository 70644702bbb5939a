// The operator's credentials live only in this tab's sessionStorage: gone when the tab closes or
// on sign-out, never written anywhere else.
const KEY = 'ironbark-console-credentials';

/** @returns {{ accessKeyId: string, secretAccessKey: string, region: string } | undefined} */
export function loadCredentials() {
  const raw = sessionStorage.getItem(KEY);
  if (raw === null) return undefined;
  try {
    const c = JSON.parse(raw);
    if (typeof c.accessKeyId === 'string' && typeof c.secretAccessKey === 'string' && typeof c.region === 'string') return c;
  } catch {
    // A damaged entry is as good as none.
  }
  sessionStorage.removeItem(KEY);
  return undefined;
}

export function saveCredentials(credentials) {
  sessionStorage.setItem(KEY, JSON.stringify(credentials));
}

export function clearCredentials() {
  sessionStorage.removeItem(KEY);
}
