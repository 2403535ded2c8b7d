// Retrieval chunks: the heading path each chunk sits under, paragraphs packed whole, long paragraphs cut at sentence
// ends, the overlap with the previous chunk of the same section (and never across sections), and the bounds the
// database relies on: tokens and characters per chunk, number of chunks, no NUL.
import { estimateTokens } from "../../lib/llm/provider.ts";
import { chunkContentMaxChars, chunkDocument, type ChunkOptions, type DocumentChunk } from "../../lib/retrieval/chunks.ts";

const contents = (chunks: DocumentChunk[]) => chunks.map((chunk) => chunk.content);

describe("headings", () => {
  test("each chunk has the path of headings it sits under; null before the first; heading lines are not in the content", () => {
    const doc = "Intro line.\n\n# Install\n\nGet it.\n\n## Linux\n\nRun apt.\n\n### Debian ###\n\nUse dpkg.\n\n## macOS\nUse brew.\n\n# Usage\n\nRun it.";
    expect(chunkDocument(doc)).toEqual([
      { ordinal: 0, heading: null, content: "Intro line." },
      { ordinal: 1, heading: "Install", content: "Get it." },
      { ordinal: 2, heading: "Install › Linux", content: "Run apt." },
      { ordinal: 3, heading: "Install › Linux › Debian", content: "Use dpkg." },
      { ordinal: 4, heading: "Install › macOS", content: "Use brew." },
      { ordinal: 5, heading: "Usage", content: "Run it." },
    ]);
  });

  test("setext headings: a one-line paragraph underlined with === or ---", () => {
    const doc = "Guide\n=====\n\nWelcome.\n\nSetup\n-----\nSteps.\n\nTwo lines\nof text\n---\nafter";
    expect(chunkDocument(doc)).toEqual([
      { ordinal: 0, heading: "Guide", content: "Welcome." },
      // The underline under a two-line paragraph is left as it is.
      { ordinal: 1, heading: "Guide › Setup", content: "Steps.\n\nTwo lines\nof text\n---\nafter" },
    ]);
  });

  test("a # inside a fenced code block, without a space after it, or indented four spaces is not a heading", () => {
    const doc = "# Shell\n\n```sh\n# install it\napt install x\n```\n\n~~~~\n## still code\n~~~\n~~~~\n\n#hashtag\n\n    # indented code";
    expect(chunkDocument(doc)).toEqual([
      { ordinal: 0, heading: "Shell", content: "```sh\n# install it\napt install x\n```\n\n~~~~\n## still code\n~~~\n~~~~\n\n#hashtag\n\n    # indented code" },
    ]);
  });

  test("skipped levels and empty headings: the path keeps only the titles there are", () => {
    expect(chunkDocument("# A\n### C\ntext\n## B\n#### \nx")).toEqual([
      { ordinal: 0, heading: "A › C", content: "text" },
      { ordinal: 1, heading: "A › B", content: "x" },
    ]);
  });

  test("plain and html text have no headings", () => {
    for (const format of ["plain", "html"] as const) {
      expect(chunkDocument("# Not a heading\n\ntext\nUnderlined\n===", { format })).toEqual([
        { ordinal: 0, heading: null, content: "# Not a heading\n\ntext\nUnderlined\n===" },
      ]);
    }
  });

  test("sections with nothing but whitespace give no chunk", () => {
    expect(chunkDocument("# A\n\n   \n\n## B\n\t\n## C\ntext")).toEqual([{ ordinal: 0, heading: "A › C", content: "text" }]);
  });
});

describe("packing", () => {
  test("whole paragraphs are packed while the chunk stays within maxTokens, blank lines kept as they are", () => {
    // 20 characters (5 tokens) fit in 6; a third paragraph would make 31 (8).
    expect(contents(chunkDocument("aaaa bbbb\n\ncccc dddd\n\neeee ffff\n\n\n\ngggg", { maxTokens: 6, overlapTokens: 0 }))).toEqual([
      "aaaa bbbb\n\ncccc dddd",
      "eeee ffff\n\n\n\ngggg",
    ]);
  });

  test("a paragraph longer than maxTokens is cut at sentence ends, then at whitespace", () => {
    expect(contents(chunkDocument("One two. Three four. Five six. Seven eight.", { maxTokens: 6, overlapTokens: 0 }))).toEqual([
      "One two. Three four.",
      "Five six. Seven eight.",
    ]);
    // Cut at the last whitespace within 16 characters (4 tokens): "alpha beta gamma" would need the space after it.
    expect(contents(chunkDocument("alpha beta gamma delta epsilon zeta eta", { maxTokens: 4, overlapTokens: 0 }))).toEqual([
      "alpha beta",
      "gamma delta",
      "epsilon zeta eta",
    ]);
  });

  test("a word longer than maxTokens is cut in pieces", () => {
    expect(contents(chunkDocument(`${"x".repeat(30)} end`, { maxTokens: 3, overlapTokens: 0 }))).toEqual(["xxxxxxxxxxxx", "xxxxxxxxxxxx", "xxxxxx end"]);
  });

  test("the pieces of a long paragraph are packed with the next paragraph when they fit", () => {
    expect(contents(chunkDocument("One two. Three four. Five six.\n\nSeven.", { maxTokens: 6, overlapTokens: 0 }))).toEqual([
      "One two. Three four.",
      "Five six.\n\nSeven.",
    ]);
  });
});

describe("overlap", () => {
  test("a chunk starts with the last sentences of the previous one that fit in overlapTokens", () => {
    // "Three four. " is 12 characters (3 tokens); with "One two. " it would be 6.
    expect(contents(chunkDocument("One two. Three four. Five six. Seven eight.", { maxTokens: 6, overlapTokens: 3 }))).toEqual([
      "One two. Three four.",
      "Three four. Five six. Seven eight.",
    ]);
  });

  test("no overlap across sections", () => {
    expect(chunkDocument("One two. Three four. Five six.\n\n## Next\n\nSeven eight. Nine ten.", { maxTokens: 6, overlapTokens: 3 })).toEqual([
      { ordinal: 0, heading: null, content: "One two. Three four." },
      { ordinal: 1, heading: null, content: "Three four. Five six." },
      { ordinal: 2, heading: "Next", content: "Seven eight. Nine ten." },
    ]);
  });

  test("no overlap when even the last sentence of the previous chunk is longer than overlapTokens", () => {
    // A chunk without a sentence end is one sentence: "gamma delta " is 3 tokens.
    expect(contents(chunkDocument("alpha beta gamma delta epsilon zeta", { maxTokens: 4, overlapTokens: 2 }))).toEqual([
      "alpha beta",
      "gamma delta",
      "epsilon zeta",
    ]);
  });

  test("the overlap crosses a paragraph break inside the section, which it keeps", () => {
    expect(contents(chunkDocument("Aa bb. Cc dd.\n\nEe ff gg hh.", { maxTokens: 4, overlapTokens: 2 }))).toEqual(["Aa bb. Cc dd.", "Cc dd.\n\nEe ff gg hh."]);
  });
});

describe("CJK text, where a character is a token", () => {
  test("sentences ending in 。 are packed by tokens, with an overlap of whole sentences", () => {
    // Each sentence: six Han characters (a token each) and 。 (a quarter): 56 sentences make 350 tokens, 8 make 50.
    const sentence = "这是一个句子。";
    const chunks = contents(chunkDocument(sentence.repeat(200)));
    expect(chunks.map((chunk) => chunk.length)).toEqual([56 * 7, 64 * 7, 64 * 7, 40 * 7]);
    expect(chunks.map(estimateTokens)).toEqual([350, 400, 400, 250]);
    expect(chunks[1]).toBe(sentence.repeat(64));
  });

  test("a run without punctuation is cut every maxTokens characters", () => {
    expect(contents(chunkDocument("漢".repeat(3000))).map((chunk) => chunk.length)).toEqual([350, 350, 350, 350, 350, 350, 350, 350, 200]);
  });
});

describe("bounds", () => {
  // A deterministic pseudo-random document: headings, paragraphs of numbered words (each wN once), CJK sentences,
  // giant words, code fences, runs of blank lines and spaces.
  function randomDocument(seed: number, parts: number): { doc: string; words: string[] } {
    let state = seed;
    const next = (n: number) => {
      state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
      return state % n;
    };
    const words: string[] = [];
    const out: string[] = [];
    for (let part = 0; part < parts; part++) {
      const kind = next(10);
      if (kind === 0) out.push(`${"#".repeat(1 + next(6))} Heading ${part}`);
      else if (kind === 1) out.push("这是中文的一个句子。".repeat(1 + next(200)));
      else if (kind === 2) out.push(`${"y".repeat(1 + next(9000))}`);
      else if (kind === 3) out.push(`\`\`\`\n# code ${part}\n${"  z = 1;\n".repeat(next(50))}\`\`\``);
      else {
        const sentence = () => {
          const count = 1 + next(30);
          const line = Array.from({ length: count }, () => (words.push(`w${words.length}`), words.at(-1)!)).join(next(5) === 0 ? "   " : " ");
          return `${line}${next(3) === 0 ? "." : next(2) === 0 ? "!" : ""}`;
        };
        out.push(Array.from({ length: 1 + next(40) }, sentence).join(" "));
      }
      out.push("\n".repeat(1 + next(4)));
    }
    return { doc: out.join("\n"), words };
  }

  const optionSets: ChunkOptions[] = [{}, { maxTokens: 40, overlapTokens: 10 }, { maxTokens: 2, overlapTokens: 0 }, { maxTokens: 1950, overlapTokens: 50 }];

  test.each(optionSets)("every chunk is within maxTokens + overlapTokens and 8000 characters, verbatim, and all words are kept (%j)", (options) => {
    const { doc, words } = randomDocument(7, 120);
    const chunks = chunkDocument(doc, { ...options, maxChunks: 1_000_000 });
    const maxTokens = (options.maxTokens ?? 350) + (options.overlapTokens ?? 50);
    expect(chunks.length).toBeGreaterThan(10);
    const wrong = chunks.filter(
      (chunk, index) =>
        chunk.ordinal !== index ||
        estimateTokens(chunk.content) > maxTokens ||
        chunk.content.length > chunkContentMaxChars ||
        chunk.content !== chunk.content.trim() ||
        chunk.content === "" ||
        !doc.includes(chunk.content),
    );
    expect(wrong).toEqual([]);
    const all = new Set(chunks.flatMap((chunk) => chunk.content.split(/\s+/)).map((word) => word.replace(/[.!]$/, "")));
    expect(words.filter((word) => !all.has(word))).toEqual([]);
  });

  test("CJK and giant words at the largest options stay within 8000 characters", () => {
    const options = { maxTokens: 1950, overlapTokens: 50 };
    for (const doc of ["a".repeat(50_000), "漢".repeat(50_000), "Aaaa bbbb cccc. ".repeat(5_000), "漢字。".repeat(20_000)]) {
      for (const chunk of chunkDocument(doc, options)) expect(chunk.content.length).toBeLessThanOrEqual(chunkContentMaxChars);
    }
    expect(chunkDocument("a".repeat(50_000), options)[0]!.content).toHaveLength(7800);
  });

  test("at most maxChunks chunks (default 2000): the rest of the document is dropped", () => {
    const doc = "# A\n\nfirst\n\nsecond\n\n# B\n\nthird\n\nfourth";
    expect(chunkDocument(doc, { maxTokens: 2, overlapTokens: 0, maxChunks: 3 })).toEqual([
      { ordinal: 0, heading: "A", content: "first" },
      { ordinal: 1, heading: "A", content: "second" },
      { ordinal: 2, heading: "B", content: "third" },
    ]);
    expect(chunkDocument("word ".repeat(10_000), { maxTokens: 2, overlapTokens: 0 })).toHaveLength(2000);
  });

  test("options out of range are a RangeError", () => {
    for (const options of [
      { maxTokens: 1 },
      { maxTokens: 10.5 },
      { overlapTokens: -1 },
      { maxChunks: 0 },
      { maxTokens: Number.NaN },
      { maxTokens: 1951, overlapTokens: 50 },
    ]) {
      expect(() => chunkDocument("text", options)).toThrow(RangeError);
    }
    expect(chunkDocument("text", { maxTokens: 1950, overlapTokens: 50 })).toHaveLength(1);
  });
});

test("an empty or blank document gives no chunks", () => {
  for (const doc of ["", "   \n\n\t", "\u0000", "# Title\n\n## Sub\n"]) expect(chunkDocument(doc)).toEqual([]);
});

test("NUL characters are removed and line ends become \\n", () => {
  expect(chunkDocument("a\u0000b\r\n\r\n# T\u0000itle\r\nbody\u0000\rnext")).toEqual([
    { ordinal: 0, heading: null, content: "ab" },
    { ordinal: 1, heading: "Title", content: "body\nnext" },
  ]);
});

test("the same input always gives the same chunks", () => {
  const doc = "# A\n\nOne two. Three four. Five six.\n\n## B\n\n这是一个句子。\n\n".repeat(50);
  const first = chunkDocument(doc, { maxTokens: 20, overlapTokens: 5 });
  expect(chunkDocument(doc, { maxTokens: 20, overlapTokens: 5 })).toEqual(first);
  expect(first.slice(0, 3)).toEqual([
    { ordinal: 0, heading: "A", content: "One two. Three four. Five six." },
    { ordinal: 1, heading: "A › B", content: "这是一个句子。" },
    { ordinal: 2, heading: "A", content: "One two. Three four. Five six." },
  ]);
});
