import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PlacementIndex } from '../../src/cluster/placement-index.ts';

describe('PlacementIndex', () => {
  it('answers by instance and by node, also after an instance moves or goes', () => {
    const index = new PlacementIndex();
    index.set('i-1', 'a');
    index.set('i-2', 'a');
    index.set('i-3', 'b');
    assert.deepEqual(index.onNode('a').sort(), ['i-1', 'i-2']);
    index.set('i-2', 'b');
    assert.equal(index.get('i-2'), 'b');
    assert.deepEqual(index.onNode('a'), ['i-1']);
    assert.deepEqual(index.onNode('b').sort(), ['i-2', 'i-3']);
    for (const id of index.onNode('b')) index.delete(id);
    assert.deepEqual(index.onNode('b'), []);
    assert.equal(index.has('i-3'), false);
    assert.equal(index.get('i-1'), 'a');
    index.delete('i-unknown');
    assert.deepEqual(index.onNode('nowhere'), []);
  });
});
