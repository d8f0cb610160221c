import { readFile } from 'node:fs/promises';
import { HarmonicaError } from '../util/errors.js';

/**
 * Offline loader for HuggingFace `tokenizer.json` files, limited to what our text encoders
 * need: T5's sentencepiece Unigram model (Precompiled/Replace normalizers, Metaspace
 * pre-tokenizer, `</s>` appended by a TemplateProcessing post-processor) and the WordLevel
 * tokenizers we write ourselves (writeWordLevelTokenizer). Anything else is refused with
 * BAD_CONFIG rather than tokenized differently from the model's training.
 *
 * Not a port of `@huggingface/tokenizers` (npm): it maps WordLevel tokens to `undefined` ids.
 * Added tokens are not matched in the raw text: a prompt containing "</s>" is tokenized as text.
 */

export interface Encoded {
  /** Token ids, padded with the pad id to maxLength. */
  ids: number[];
  /** 1 for real tokens (special tokens included), 0 for padding. */
  mask: number[];
  /** True when the text did not fit and was cut (the appended EOS is kept). */
  truncated: boolean;
  /** Real tokens, EOS included: the number of ones in `mask`. */
  length: number;
}

type Json = Record<string, unknown>;

function bad(source: string, message: string): HarmonicaError {
  return new HarmonicaError('BAD_CONFIG', `${source}: ${message}`);
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// ---- normalizers --------------------------------------------------------------------------

type Normalizer = (text: string) => string;

/**
 * Sentencepiece's precompiled charsmap, approximated the way tokenizers.js does: T5's map
 * ("nmt_nfkc") is NFKC plus dropping control characters and turning other whitespace into
 * spaces. Decoding the darts-clone trie inside the charsmap would be exact; for prompts the
 * two agree on everything but rare code points.
 */
function precompiledApprox(text: string): string {
  return text
    .replace(/[\u0001-\u0008\u000B\u000E-\u001F\u007F\u008F\u009F]/g, '')
    .replace(/[\u0009\u000A\u000C\u000D\u00A0\u1680\u2000-\u200F\u2028\u2029\u202F\u205F\u2581\u3000\uFEFF\uFFFD]/g, ' ')
    .normalize('NFKC');
}

function makeNormalizer(cfg: unknown, source: string): Normalizer {
  if (cfg === null || cfg === undefined) return (t) => t;
  if (!isObject(cfg)) throw bad(source, 'normalizer must be an object');
  switch (cfg.type) {
    case 'Sequence': {
      if (!Array.isArray(cfg.normalizers)) throw bad(source, 'Sequence normalizer without a normalizers list');
      const parts = cfg.normalizers.map((n) => makeNormalizer(n, source));
      return (t) => parts.reduce((s, n) => n(s), t);
    }
    case 'Lowercase': return (t) => t.toLowerCase();
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD': {
      const form = cfg.type;
      return (t) => t.normalize(form);
    }
    case 'Strip': {
      const left = cfg.strip_left !== false;
      const right = cfg.strip_right !== false;
      return (t) => {
        const s = left ? t.replace(/^\p{White_Space}+/u, '') : t;
        return right ? s.replace(/\p{White_Space}+$/u, '') : s;
      };
    }
    case 'Replace': {
      const pattern = cfg.pattern;
      if (!isObject(pattern) || typeof cfg.content !== 'string') throw bad(source, 'Replace normalizer needs a pattern and a content');
      const content = cfg.content;
      if (typeof pattern.String === 'string') {
        const s = pattern.String;
        return (t) => t.split(s).join(content);
      }
      if (typeof pattern.Regex === 'string') {
        const re = new RegExp(pattern.Regex, 'gu');
        return (t) => t.replace(re, () => content);
      }
      throw bad(source, 'Replace normalizer pattern must be {String} or {Regex}');
    }
    case 'Precompiled': return precompiledApprox;
    default: throw bad(source, `normalizer type ${JSON.stringify(cfg.type)} is not supported`);
  }
}

// ---- pre-tokenizers -----------------------------------------------------------------------

/** Splits each piece of the text further (index 0 is the piece at the start of the text). */
type PreTokenizer = (pieces: string[]) => string[];

/** Rust regex's Unicode \w, which the `Whitespace` pre-tokenizer's `\w+|[^\w\s]+` uses. */
const WORD = '\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}';
const WORDS_OR_PUNCT = new RegExp(`[${WORD}]+|[^${WORD}\\p{White_Space}]+`, 'gu');

function makePreTokenizer(cfg: unknown, source: string): PreTokenizer {
  if (cfg === null || cfg === undefined) return (p) => p;
  if (!isObject(cfg)) throw bad(source, 'pre_tokenizer must be an object');
  switch (cfg.type) {
    case 'Sequence': {
      if (!Array.isArray(cfg.pretokenizers)) throw bad(source, 'Sequence pre_tokenizer without a pretokenizers list');
      const parts = cfg.pretokenizers.map((p) => makePreTokenizer(p, source));
      return (p) => parts.reduce((s, f) => f(s), p);
    }
    case 'Whitespace': return (p) => p.flatMap((s) => s.match(WORDS_OR_PUNCT) ?? []);
    case 'WhitespaceSplit': return (p) => p.flatMap((s) => s.split(/\p{White_Space}+/u).filter((w) => w.length > 0));
    case 'Metaspace': return metaspace(cfg, source);
    default: throw bad(source, `pre_tokenizer type ${JSON.stringify(cfg.type)} is not supported`);
  }
}

/**
 * Sentencepiece's view of spaces: ' ' becomes '▁', a '▁' is prepended (so "cat" at the start
 * and " cat" inside a sentence tokenize alike), and with `split` every '▁' starts a new piece.
 * Older files say `add_prefix_space` instead of `prepend_scheme`.
 */
function metaspace(cfg: Json, source: string): PreTokenizer {
  const replacement = typeof cfg.replacement === 'string' ? cfg.replacement : '\u2581';
  const scheme = cfg.prepend_scheme ?? (cfg.add_prefix_space === false ? 'never' : 'always');
  if (scheme !== 'always' && scheme !== 'first' && scheme !== 'never') throw bad(source, `Metaspace prepend_scheme ${JSON.stringify(scheme)} is not supported`);
  const split = cfg.split !== false;
  return (pieces) => pieces.flatMap((piece, i) => {
    let s = piece.replaceAll(' ', replacement);
    if (!s.startsWith(replacement) && (scheme === 'always' || (scheme === 'first' && i === 0))) s = replacement + s;
    if (!split) return [s];
    const out: string[] = [];
    for (const ch of s) {
      if (ch === replacement || out.length === 0) out.push(ch);
      else out[out.length - 1] += ch;
    }
    return out;
  });
}

// ---- models -------------------------------------------------------------------------------

interface Model {
  /** Ids of one pre-tokenized piece. */
  encode(piece: string): number[];
  /** Every token with its id. */
  vocab(): Map<string, number>;
}

/** sentencepiece / HF: an unknown character costs 10 more than the least likely piece. */
const UNK_PENALTY = 10;

/**
 * Sentencepiece's Unigram model: the segmentation of a piece into vocabulary entries whose
 * log-probabilities (scores) add up highest, found by Viterbi over character positions.
 * A character that no single-character entry covers becomes the unknown token, and runs of
 * unknowns are fused into one, as HF tokenizers does.
 */
class UnigramModel implements Model {
  private readonly ids = new Map<string, number>();
  private readonly scores: number[];
  private readonly maxChars: number;
  private readonly unkScore: number;

  constructor(entries: [string, number][], private readonly unkId: number) {
    this.scores = entries.map(([, s]) => s);
    entries.forEach(([piece], id) => this.ids.set(piece, id));
    // reduce, not Math.max(...): a spread of a 250k-entry vocab overflows the call stack.
    this.maxChars = entries.reduce((m, [p]) => Math.max(m, [...p].length), 0);
    this.unkScore = this.scores.reduce((m, s) => Math.min(m, s), Infinity) - UNK_PENALTY;
  }

  encode(piece: string): number[] {
    const chars = [...piece];
    const n = chars.length;
    // best[e]: score of the best segmentation of chars[0, e); it ends with token[e] starting at from[e].
    const best = new Float64Array(n + 1).fill(-Infinity);
    const from = new Int32Array(n + 1);
    const token = new Int32Array(n + 1);
    best[0] = 0;
    const relax = (start: number, end: number, id: number, score: number) => {
      // Strictly better only: among ties the first candidate found (earliest start) wins, as in HF.
      if (best[start]! + score > best[end]!) {
        best[end] = best[start]! + score;
        from[end] = start;
        token[end] = id;
      }
    };
    for (let start = 0; start < n; start++) {
      let candidate = '';
      let coveredByOneChar = false;
      for (let len = 1; len <= Math.min(this.maxChars, n - start); len++) {
        candidate += chars[start + len - 1]!;
        const id = this.ids.get(candidate);
        if (id === undefined) continue;
        if (len === 1) coveredByOneChar = true;
        relax(start, start + len, id, this.scores[id]!);
      }
      if (!coveredByOneChar) relax(start, start + 1, this.unkId, this.unkScore);
    }
    const out: number[] = [];
    for (let end = n; end > 0; end = from[end]!) {
      const id = token[end]!;
      if (!(id === this.unkId && out[out.length - 1] === this.unkId)) out.push(id);
    }
    return out.reverse();
  }

  vocab(): Map<string, number> {
    return new Map(this.ids);
  }
}

/** One id per pre-tokenized word; words outside the vocabulary become the unknown token. */
class WordLevelModel implements Model {
  constructor(private readonly ids: Map<string, number>, private readonly unkId: number) {}

  encode(piece: string): number[] {
    return [this.ids.get(piece) ?? this.unkId];
  }

  vocab(): Map<string, number> {
    return new Map(this.ids);
  }
}

function makeModel(cfg: unknown, source: string): Model {
  if (!isObject(cfg)) throw bad(source, 'model must be an object');
  if (cfg.type === 'Unigram') {
    const vocab = cfg.vocab;
    if (!Array.isArray(vocab) || vocab.length === 0) throw bad(source, 'Unigram model needs a non-empty vocab of [piece, score] pairs');
    const entries = vocab.map((e, i): [string, number] => {
      if (!Array.isArray(e) || typeof e[0] !== 'string' || typeof e[1] !== 'number') throw bad(source, `Unigram vocab entry ${i} is not [piece, score]`);
      return [e[0], e[1]];
    });
    const unkId = cfg.unk_id;
    if (typeof unkId !== 'number' || !Number.isInteger(unkId) || unkId < 0 || unkId >= entries.length) {
      throw bad(source, `Unigram unk_id must index the vocab, got ${JSON.stringify(unkId)}`);
    }
    // Byte fallback spells unknown characters as <0xNN> pieces; T5 does not use it.
    if (cfg.byte_fallback === true) throw bad(source, 'Unigram byte_fallback is not supported');
    return new UnigramModel(entries, unkId);
  }
  if (cfg.type === 'WordLevel') {
    if (!isObject(cfg.vocab)) throw bad(source, 'WordLevel model needs a vocab object {token: id}');
    const ids = new Map<string, number>();
    for (const [token, id] of Object.entries(cfg.vocab)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw bad(source, `WordLevel vocab id of ${JSON.stringify(token)} is not a non-negative integer`);
      ids.set(token, id);
    }
    const unk = typeof cfg.unk_token === 'string' ? ids.get(cfg.unk_token) : undefined;
    if (unk === undefined) throw bad(source, `WordLevel unk_token ${JSON.stringify(cfg.unk_token)} is not in the vocab`);
    return new WordLevelModel(ids, unk);
  }
  throw bad(source, `model type ${JSON.stringify(cfg.type)} is not supported (only Unigram and WordLevel)`);
}

// ---- post-processor -----------------------------------------------------------------------

/** The special token ids put before and after a single sequence. */
interface Template {
  prefix: number[];
  suffix: number[];
}

function makeTemplate(cfg: unknown, source: string): Template {
  if (cfg === null || cfg === undefined) return { prefix: [], suffix: [] };
  if (!isObject(cfg) || cfg.type !== 'TemplateProcessing') {
    throw bad(source, `post_processor type ${JSON.stringify(isObject(cfg) ? cfg.type : cfg)} is not supported (only TemplateProcessing)`);
  }
  if (!Array.isArray(cfg.single) || !isObject(cfg.special_tokens)) throw bad(source, 'TemplateProcessing needs single and special_tokens');
  const specials = cfg.special_tokens;
  const t: Template = { prefix: [], suffix: [] };
  let seenSequence = false;
  for (const item of cfg.single) {
    if (isObject(item) && isObject(item.Sequence)) {
      if (item.Sequence.id !== 'A' || seenSequence) throw bad(source, 'TemplateProcessing single must hold sequence $A once');
      seenSequence = true;
    } else if (isObject(item) && isObject(item.SpecialToken) && typeof item.SpecialToken.id === 'string') {
      const special = specials[item.SpecialToken.id];
      if (!isObject(special) || !Array.isArray(special.ids) || !special.ids.every((x) => typeof x === 'number')) {
        throw bad(source, `TemplateProcessing special token ${JSON.stringify(item.SpecialToken.id)} has no ids`);
      }
      (seenSequence ? t.suffix : t.prefix).push(...(special.ids as number[]));
    } else {
      throw bad(source, `TemplateProcessing item ${JSON.stringify(item)} is neither a Sequence nor a SpecialToken`);
    }
  }
  if (!seenSequence) throw bad(source, 'TemplateProcessing single has no $A');
  return t;
}

// ---- tokenizer ----------------------------------------------------------------------------

const PAD_NAMES = ['<pad>', '[PAD]'];
const EOS_NAMES = ['</s>', '[EOS]'];

export class TextTokenizer {
  readonly padId: number;
  readonly eosId: number;
  /** Number of ids (largest id + 1), added tokens included: the embedding table's rows. */
  readonly vocabSize: number;
  private readonly idToToken = new Map<number, string>();

  private constructor(
    private readonly normalize: Normalizer,
    private readonly preTokenize: PreTokenizer,
    private readonly model: Model,
    private readonly template: Template,
    json: Json,
    source: string,
  ) {
    const vocab = model.vocab();
    if (Array.isArray(json.added_tokens)) {
      for (const t of json.added_tokens) {
        if (isObject(t) && typeof t.content === 'string' && typeof t.id === 'number') vocab.set(t.content, t.id);
      }
    }
    for (const [token, id] of vocab) if (!this.idToToken.has(id)) this.idToToken.set(id, token);
    this.vocabSize = [...vocab.values()].reduce((m, i) => Math.max(m, i), -1) + 1;

    const byName = (names: string[]) => names.map((n) => vocab.get(n)).find((id) => id !== undefined);
    const padding = json.padding;
    const pad = isObject(padding) && typeof padding.pad_id === 'number' ? padding.pad_id : byName(PAD_NAMES);
    if (pad === undefined) throw bad(source, `no pad token (padding.pad_id, or one of ${PAD_NAMES.join(' ')})`);
    this.padId = pad;
    // The token the post-processor appends is the EOS the model was trained with.
    const eos = template.suffix[template.suffix.length - 1] ?? byName(EOS_NAMES);
    if (eos === undefined) throw bad(source, `no EOS token (a post-processor suffix, or one of ${EOS_NAMES.join(' ')})`);
    this.eosId = eos;
  }

  static async load(path: string): Promise<TextTokenizer> {
    let json: unknown;
    try {
      json = JSON.parse(await readFile(path, 'utf8'));
    } catch (err) {
      throw bad(path, `cannot read tokenizer.json: ${(err as Error).message}`);
    }
    return TextTokenizer.fromJSON(json, path);
  }

  static fromJSON(json: unknown, source = 'tokenizer.json'): TextTokenizer {
    if (!isObject(json)) throw bad(source, 'expected a JSON object');
    return new TextTokenizer(
      makeNormalizer(json.normalizer, source),
      makePreTokenizer(json.pre_tokenizer, source),
      makeModel(json.model, source),
      makeTemplate(json.post_processor, source),
      json,
      source,
    );
  }

  /** Token ids of `text` without special tokens, truncation or padding. */
  tokenIds(text: string): number[] {
    const normalized = this.normalize(text);
    // HF drops empty splits before pre-tokenizing: "" gets no Metaspace '▁', only the EOS.
    if (normalized === '') return [];
    return this.preTokenize([normalized]).flatMap((piece) => this.model.encode(piece));
  }

  /** The tokens of `text` as strings (for inspection and tests). */
  tokenize(text: string): string[] {
    return this.tokenIds(text).map((id) => this.idToToken.get(id)!);
  }

  /**
   * Ids for a model with a static sequence length: the text's tokens between the
   * post-processor's special tokens, cut to fit maxLength (specials kept, as HF's truncation
   * does, so T5 still sees its EOS) and padded.
   */
  encode(text: string, maxLength: number): Encoded {
    const { prefix, suffix } = this.template;
    const room = maxLength - prefix.length - suffix.length;
    if (!Number.isInteger(maxLength) || room < 0) {
      throw new HarmonicaError('BAD_INPUT', `maxLength ${maxLength} leaves no room for the ${prefix.length + suffix.length} special tokens`);
    }
    const content = this.tokenIds(text);
    const truncated = content.length > room;
    const real = [...prefix, ...content.slice(0, room), ...suffix];
    const padding = maxLength - real.length;
    return {
      ids: [...real, ...new Array<number>(padding).fill(this.padId)],
      mask: [...new Array<number>(real.length).fill(1), ...new Array<number>(padding).fill(0)],
      truncated,
      length: real.length,
    };
  }
}

// ---- writing our own word-level tokenizer -------------------------------------------------

export const WORD_LEVEL_SPECIALS = ['[PAD]', '[EOS]', '[UNK]'] as const;

/**
 * A HuggingFace tokenizer.json for a word-level vocabulary: lowercase, split into words and
 * punctuation runs (the `Whitespace` pre-tokenizer), [PAD]=0, [EOS]=1, [UNK]=2, then `words`
 * in order, and [EOS] appended to every text. Words are lowercased and de-duplicated; a word
 * the pre-tokenizer would split ("a b", "cat,") could never be produced and is refused.
 */
export function writeWordLevelTokenizer(words: string[]): Json {
  const vocab: Record<string, number> = {};
  WORD_LEVEL_SPECIALS.forEach((t, i) => (vocab[t] = i));
  let next = WORD_LEVEL_SPECIALS.length;
  for (const raw of words) {
    const word = raw.toLowerCase();
    const pieces = word.match(WORDS_OR_PUNCT) ?? [];
    if (pieces.length !== 1 || pieces[0] !== word) {
      throw new HarmonicaError('BAD_INPUT', `word ${JSON.stringify(raw)} is not a single token for the Whitespace pre-tokenizer`);
    }
    if (!Object.hasOwn(vocab, word)) vocab[word] = next++;
  }
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const eos = { SpecialToken: { id: '[EOS]', type_id: 0 } };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: WORD_LEVEL_SPECIALS.map((t, i) => special(t, i)),
    normalizer: { type: 'Lowercase' },
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }, eos],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, eos, { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: '[EOS]', type_id: 1 } }],
      special_tokens: { '[EOS]': { id: '[EOS]', ids: [1], tokens: ['[EOS]'] } },
    },
    decoder: null,
    model: { type: 'WordLevel', vocab, unk_token: '[UNK]' },
  };
}
