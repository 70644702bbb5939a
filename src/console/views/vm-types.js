// VM types: the instance types users may launch; set (create or replace) and delete.
import { h, table, statusLine, actionButton, field, form } from '../dom.js';
import { path } from '../api.js';

export const title = 'VM types';

export async function render(root, ctx) {
  const status = statusLine();
  const list = h('div');
  const reload = async () => {
    const { vmTypes } = await ctx.api.get('/vm-types');
    list.replaceChildren(table([
      { title: 'Name', value: (t) => t.name },
      { title: 'Cores', value: (t) => t.cores, num: true },
      { title: 'Memory MiB', value: (t) => t.memoryMiB, num: true },
      { title: 'Disk GiB', value: (t) => t.diskGiB, num: true },
      { title: '', value: (t) => actionButton('Delete', async () => {
        if (!confirm(`Delete the VM type ${t.name}?`)) return;
        try {
          await ctx.api.delete(path('vm-types', t.name));
          status.ok(`Deleted ${t.name}.`);
          await reload();
        } catch (err) { status.error(err); }
      }, { class: 'danger' }) },
    ], vmTypes, 'No VM types.'));
  };

  const nameInput = h('input', { name: 'name', required: true, placeholder: 'm1.small' });
  const cores = h('input', { name: 'cores', type: 'number', min: 1, required: true });
  const memory = h('input', { name: 'memoryMiB', type: 'number', min: 1, required: true });
  const disk = h('input', { name: 'diskGiB', type: 'number', min: 1, required: true });
  const setForm = form({ class: 'inline' }, [
    field('Name', nameInput), field('Cores', cores), field('Memory MiB', memory), field('Disk GiB', disk),
    h('button', { type: 'submit' }, 'Set VM type'),
  ], async () => {
    try {
      // Numbers go as typed: the API says what is wrong with them.
      const { vmType } = await ctx.api.put(path('vm-types', nameInput.value.trim()), {
        cores: Number(cores.value), memoryMiB: Number(memory.value), diskGiB: Number(disk.value),
      });
      status.ok(`Set ${vmType.name}: ${vmType.cores} cores, ${vmType.memoryMiB} MiB, ${vmType.diskGiB} GiB.`);
      await reload();
    } catch (err) { status.error(err); }
  });

  root.replaceChildren(h('h2', {}, 'VM types'), status.el, list, h('h3', {}, 'Create or replace'), setForm);
  try { await reload(); } catch (err) { status.error(err); }
}
