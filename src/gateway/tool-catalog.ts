/**
 * The tool names each upstream has announced, as the label set of `mcpgate_tool_calls_total`.
 * A tool name in a `tools/call` is the agent's text: as a metric label it would let any agent
 * create series without end (and put whatever it likes into the metrics). So a name becomes a
 * label only once the upstream itself listed it in a `tools/list` answer, at most `maxPerUpstream`
 * names per upstream; every other call is counted as `other`.
 *
 * Per process, and only for metrics: each replica learns the names from the answers it relays,
 * and a replica that has not seen a `tools/list` yet counts calls as `other` until it does.
 */

/** The label of calls to tools the upstream never listed (or past the cap). */
export const OTHER_TOOL = 'other';

/** Longest tool name kept as a label; a longer one is `other`. */
const MAX_NAME_LENGTH = 128;

/** See the module comment. */
export interface ToolCatalog {
  /** Learns the names of a `tools/list` result (`result.tools[].name`) of an upstream. */
  learn(upstream: string, result: unknown): void;
  /** The metric label of a call to `tool` at `upstream`: the name when listed, else {@link OTHER_TOOL}. */
  label(upstream: string, tool: string | undefined): string;
}

/** Creates a catalog holding at most `maxPerUpstream` names per upstream (e.g. 200). */
export function createToolCatalog(options: { maxPerUpstream: number }): ToolCatalog {
  const { maxPerUpstream } = options;
  if (!Number.isSafeInteger(maxPerUpstream) || maxPerUpstream < 1) throw new TypeError('maxPerUpstream must be a positive integer');
  const names = new Map<string, Set<string>>();
  return {
    learn(upstream, result) {
      const tools = typeof result === 'object' && result !== null ? (result as { tools?: unknown }).tools : undefined;
      if (!Array.isArray(tools)) return;
      let known = names.get(upstream);
      if (!known) names.set(upstream, (known = new Set()));
      for (const tool of tools) {
        if (known.size >= maxPerUpstream) return;
        const name = typeof tool === 'object' && tool !== null ? (tool as { name?: unknown }).name : undefined;
        // The name is the upstream's text too: kept only when it is a plausible identifier.
        if (typeof name === 'string' && name.length > 0 && name.length <= MAX_NAME_LENGTH && !hasControl(name)) known.add(name);
      }
    },
    label(upstream, tool) {
      return tool !== undefined && names.get(upstream)?.has(tool) ? tool : OTHER_TOOL;
    },
  };
}

function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}
