import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TextTokenizer, writeWordLevelTokenizer } from '../../src/models/tokenizer.js';
import { Rng } from '../../src/tensor/rng.js';

const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

/**
 * A tiny T5-style sentencepiece vocabulary. Scores are chosen so that the best segmentation
 * is unique and differs from greedy longest-match: "▁cats" -> "▁cat" "s" (-6, not "▁cats" -10),
 * "▁at" -> "▁" "at" (-5, not "▁a" "t" -5.5).
 */
const PIECES: [string, number][] = [
  ['<pad>', 0], ['</s>', 0], ['<unk>', 0],
  ['▁', -3], ['▁c', -3], ['▁cat', -4], ['▁cats', -10], ['at', -2], ['s', -2],
  ['a', -3], ['t', -3], ['c', -4], ['▁ca', -2], ['▁a', -2.5],
];
const id = (piece: string) => PIECES.findIndex(([p]) => p === piece);

/** The layout transformers writes for T5 (convert_slow_tokenizer's T5Converter). */
function t5TokenizerJson(legacy = false): Record<string, unknown> {
  const special = (content: string, i: number) => ({ id: i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special('<pad>', 0), special('</s>', 1), special('<unk>', 2)],
    normalizer: legacy
      ? { type: 'Precompiled', precompiled_charsmap: 'ALQCAACEAAAA' }
      : { type: 'Sequence', normalizers: [{ type: 'Precompiled', precompiled_charsmap: 'ALQCAACEAAAA' }, { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' }] },
    pre_tokenizer: legacy
      ? { type: 'Sequence', pretokenizers: [{ type: 'WhitespaceSplit' }, { type: 'Metaspace', replacement: '▁', add_prefix_space: true }] }
      : { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }, { Sequence: { id: 'B', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      special_tokens: { '</s>': { id: '</s>', ids: [1], tokens: ['</s>'] } },
    },
    decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 2, vocab: PIECES, byte_fallback: false },
  };
}

/** Best total score over every segmentation of `s` into vocabulary pieces (exponential; short s only). */
function bruteForceBest(s: string): number {
  if (s === '') return 0;
  let best = -Infinity;
  for (const [piece, score] of PIECES.slice(3)) {
    if (s.startsWith(piece)) best = Math.max(best, score + bruteForceBest(s.slice(piece.length)));
  }
  return best;
}

describe('Unigram tokenizer (T5 layout)', () => {
  const tok = TextTokenizer.fromJSON(t5TokenizerJson());

  it('finds the Viterbi segmentation, not the greedy one, and appends </s>', () => {
    expect(tok.tokenize('cats at')).toEqual(['▁cat', 's', '▁', 'at']);
    expect(tok.encode('cats at', 8)).toEqual({
      ids: [id('▁cat'), id('s'), id('▁'), id('at'), 1, 0, 0, 0],
      mask: [1, 1, 1, 1, 1, 0, 0, 0],
      truncated: false,
      length: 5,
    });
    expect([tok.padId, tok.eosId, tok.vocabSize]).toEqual([0, 1, PIECES.length]);
  });

  it('reaches the best score over all segmentations', () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 200; trial++) {
      const word = Array.from({ length: 1 + rng.int(8) }, () => 'acts'[rng.int(4)]).join('');
      const ids = tok.tokenIds(word);
      const score = ids.reduce((s, i) => s + PIECES[i]![1], 0);
      expect([word, score]).toEqual([word, bruteForceBest(`▁${word}`)]);
    }
  });

  it('normalizes spaces like sentencepiece: runs collapse, odd spaces count, NFKC applies', () => {
    const cats = [id('▁cat'), id('s'), id('▁'), id('at')];
    expect(tok.tokenIds('cats   at')).toEqual(cats);
    expect(tok.tokenIds('cats\u3000at')).toEqual(cats); // ideographic space
    expect(tok.tokenIds('ｃａｔｓ at')).toEqual(cats); // full-width letters
  });

  it('reads the older layout (WhitespaceSplit + Metaspace add_prefix_space) the same way', () => {
    const legacy = TextTokenizer.fromJSON(t5TokenizerJson(true));
    expect(legacy.tokenIds('cats   at')).toEqual(tok.tokenIds('cats at'));
  });

  it('maps uncovered characters to one fused <unk>', () => {
    expect(tok.tokenize('caxy')).toEqual(['▁ca', '<unk>']);
    expect(tok.tokenize('cxat')).toEqual(['▁c', '<unk>', 'at']);
  });

  it('prices an unknown character 10 below the worst piece', () => {
    // "▁xat": "▁xa" "t" scores -25; "▁" <unk> "at" scores -2 + unk, which would win (-22) if
    // <unk> cost only the worst piece's -20; with the penalty it costs -30 and loses (-32).
    const vocab = [...PIECES.slice(0, 3), ['▁', -1], ['at', -1], ['t', -5], ['a', -5], ['▁xa', -20]];
    const small = TextTokenizer.fromJSON({ ...t5TokenizerJson(), model: { type: 'Unigram', unk_id: 2, vocab } });
    expect(small.tokenize('xat')).toEqual(['▁xa', 't']);
    expect(small.tokenize('yat')).toEqual(['▁', '<unk>', 'at']);
  });

  it('truncates to maxLength keeping </s>, and says so', () => {
    expect(tok.encode('cats at cat', 4)).toEqual({ ids: [id('▁cat'), id('s'), id('▁'), 1], mask: [1, 1, 1, 1], truncated: true, length: 4 });
    expect(tok.encode('cats', 3)).toEqual({ ids: [id('▁cat'), id('s'), 1], mask: [1, 1, 1], truncated: false, length: 3 });
    expect(tok.encode('', 3)).toEqual({ ids: [1, 0, 0], mask: [1, 0, 0], truncated: false, length: 1 });
    expect(() => tok.encode('cats', 0)).toThrow(expect.objectContaining({ code: 'BAD_INPUT' }));
  });

  it('refuses what it cannot reproduce, with BAD_CONFIG', () => {
    const with_ = (patch: Record<string, unknown>) => () => TextTokenizer.fromJSON({ ...t5TokenizerJson(), ...patch }, 't5.json');
    expect(with_({ model: { type: 'BPE', vocab: {}, merges: [] } })).toThrow(expect.objectContaining({ code: 'BAD_CONFIG', message: expect.stringMatching(/^t5\.json: model type "BPE"/) }));
    expect(with_({ model: { type: 'Unigram', vocab: PIECES, unk_id: null } })).toThrow(/unk_id/);
    expect(with_({ model: { type: 'Unigram', vocab: PIECES, unk_id: 2, byte_fallback: true } })).toThrow(/byte_fallback/);
    expect(with_({ normalizer: { type: 'BertNormalizer' } })).toThrow(/normalizer type "BertNormalizer"/);
    expect(with_({ pre_tokenizer: { type: 'ByteLevel' } })).toThrow(/pre_tokenizer type "ByteLevel"/);
    expect(with_({ post_processor: { type: 'RobertaProcessing' } })).toThrow(/post_processor type "RobertaProcessing"/);
    expect(() => TextTokenizer.fromJSON('{}')).toThrow(/expected a JSON object/);
  });
});

describe('word-level tokenizer', () => {
  const json = writeWordLevelTokenizer(['a', 'Red', 'cat', 'on', 'mat', 'red', 'café']);

  it('writes [PAD] [EOS] [UNK] then the lowercased, de-duplicated words', () => {
    expect((json.model as { vocab: unknown }).vocab).toEqual({ '[PAD]': 0, '[EOS]': 1, '[UNK]': 2, a: 3, red: 4, cat: 5, on: 6, mat: 7, café: 8 });
    expect(() => writeWordLevelTokenizer(['cat,'])).toThrow(/"cat," is not a single token/);
    expect(() => writeWordLevelTokenizer(['a b'])).toThrow(/"a b" is not a single token/);
  });

  it('loads back from a file: lowercase, words and punctuation, [UNK], [EOS], padding', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tok-'));
    dirs.push(dir);
    const path = join(dir, 'tokenizer.json');
    await writeFile(path, JSON.stringify(json));
    const tok = await TextTokenizer.load(path);
    expect([tok.padId, tok.eosId, tok.vocabSize]).toEqual([0, 1, 9]);
    expect(tok.tokenize('A red dog,  on the MAT')).toEqual(['a', 'red', '[UNK]', '[UNK]', 'on', '[UNK]', 'mat']);
    expect(tok.encode('A red dog, on the MAT', 10)).toEqual({ ids: [3, 4, 2, 2, 6, 2, 7, 1, 0, 0], mask: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], truncated: false, length: 8 });
    expect(tok.encode('Café!', 4).ids).toEqual([8, 2, 1, 0]);
    expect(tok.encode('a red cat on a mat', 4)).toEqual({ ids: [3, 4, 5, 1], mask: [1, 1, 1, 1], truncated: true, length: 4 });
  });

  it('reports an unreadable file as BAD_CONFIG naming the path', async () => {
    await expect(TextTokenizer.load('/nonexistent/tokenizer.json')).rejects.toThrow(expect.objectContaining({
      code: 'BAD_CONFIG', message: expect.stringMatching(/^\/nonexistent\/tokenizer\.json: cannot read/),
    }));
  });
});
