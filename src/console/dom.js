// Small DOM helpers. Everything shown comes through textContent or attributes set one by one,
// so no string from the API is ever parsed as HTML.

/**
 * `h('td', { class: 'num' }, 'text', childNode)`: an element with attributes and children.
 * Attributes starting with `on` are event listeners; `null`/`undefined`/`false` values are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'value') el.value = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Text for a table cell: '—' for nothing. */
export function show(value) {
  if (value === undefined || value === null || value === '') return '—';
  return String(value);
}

/**
 * A table from column definitions `{ title, value: (row) => string|Node, num? }` and rows;
 * a sentence instead when there are no rows.
 */
export function table(columns, rows, empty = 'Nothing to show.') {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : null }, c.title)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((c) => {
      const v = c.value(row);
      return h('td', { class: c.num ? 'num' : null }, v instanceof Node ? v : show(v));
    })))));
}

/** A message area for a view: `status.error(err)`, `status.ok('Done.')`, `status.clear()`. */
export function statusLine() {
  const el = h('div', { class: 'status', role: 'status' });
  return {
    el,
    clear() { el.replaceChildren(); el.className = 'status'; },
    ok(text) { el.replaceChildren(text); el.className = 'status ok'; },
    error(err) {
      const code = err && err.code ? `${err.code}: ` : '';
      el.replaceChildren(code + (err && err.message ? err.message : String(err)));
      el.className = 'status error';
    },
  };
}

/** A "copy it now" box for a secret shown once. */
export function secretBox(title, fields) {
  return h('div', { class: 'secret' },
    h('strong', {}, title),
    h('p', {}, 'The secret is shown only this once: copy it now.'),
    h('dl', {}, Object.entries(fields).map(([k, v]) => [h('dt', {}, k), h('dd', {}, h('code', {}, show(v)))])));
}

/** A button that runs an async action, disabled while it runs. */
export function actionButton(label, action, attrs = {}) {
  const button = h('button', { type: 'button', ...attrs }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try { await action(); } finally { button.disabled = false; }
  });
  return button;
}

/** A labelled input. */
export function field(label, input) {
  return h('label', { class: 'field' }, h('span', {}, label), input);
}

/** A form whose submit runs `onSubmit(form)`, with its submit button disabled meanwhile. */
export function form(attrs, children, onSubmit) {
  const f = h('form', attrs, children);
  f.addEventListener('submit', async (event) => {
    event.preventDefault();
    const submit = f.querySelector('button[type=submit]');
    if (submit) submit.disabled = true;
    try { await onSubmit(f); } finally { if (submit) submit.disabled = false; }
  });
  return f;
}
