// The portal's cookie and header names the proxy strips or reads. They are
// the API's (src/api/api-context.ts; test/unit/proxy-hop.test.ts checks
// that they agree), written here again so that the proxy workers need not
// load the API and state modules that api-context.ts brings along.

export const sessionCookie = 'docklet_session'
export const csrfCookie = 'docklet_csrf'
export const csrfHeader = 'x-csrf-token'
export const actAsHeader = 'x-docklet-user'
