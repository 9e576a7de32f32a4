// Which workspace a request target names: `/go/<owner>/<vcluster>/...`.
// Its own module, free of the state and agent modules, so the proxy
// workers load in a fraction of the time (workspace-route.ts re-exports it).

export const workspacePrefix = '/go/'

export interface WorkspacePath {
  owner: string
  name: string
  /** `/go/<owner>/<name>` without its trailing slash (Jupyter serves only below the slash). */
  bare: boolean
}

const SEGMENT = /^[A-Za-z_][A-Za-z0-9_-]{0,31}$/

/** Owner and vcluster name of a request target under /go/, or null when it names none. */
export function parseWorkspacePath(url: string): WorkspacePath | null {
  if (!url.startsWith(workspacePrefix)) return null
  const end = url.search(/[?#]/)
  const path = end < 0 ? url : url.slice(0, end)
  const [owner, name, ...rest] = path.slice(workspacePrefix.length).split('/')
  if (owner === undefined || name === undefined || !SEGMENT.test(owner) || !SEGMENT.test(name)) return null
  return { owner, name, bare: rest.length === 0 }
}

/** The key of a workspace in the proxy's route table. */
export function workspaceKey(owner: string, name: string): string {
  return `${owner}/${name}`
}
