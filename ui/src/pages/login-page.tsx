// Log in; links to self-registration while an admin has opened it.

import { useEffect, useState } from 'preact/hooks'
import { api } from '../api.ts'
import { ActionStatus, Button, PageHeader, TextField, useAction } from '../components.tsx'
import { Link } from '../router.tsx'
import type { Session } from '../types.ts'

export function LoginPage({ onLoggedIn }: { onLoggedIn: (session: Session) => void }) {
  const [name, setName] = useState('')
  const [password, setPassword] = useState('')
  const [registrationOpen, setRegistrationOpen] = useState(false)
  const [action, run] = useAction()

  useEffect(() => {
    api
      .settings()
      .then((settings) => setRegistrationOpen(settings.registration.open))
      .catch(() => setRegistrationOpen(false))
  }, [])

  const submit = (event: Event) => {
    event.preventDefault()
    void run('Logging in…', async () => {
      const session = await api.login(name.trim(), password)
      onLoggedIn(session)
    })
  }

  return (
    <section class="card auth-card">
      <PageHeader title="Log in to docklet" subtitle="Your virtual clusters, on any node of this cluster." />
      <form onSubmit={submit} class="stack">
        <TextField
          label="User name"
          value={name}
          onValue={setName}
          autocomplete="username"
          required
          autoCapitalize="none"
          spellcheck={false}
        />
        <TextField
          label="Password"
          type="password"
          value={password}
          onValue={setPassword}
          autocomplete="current-password"
          required
        />
        <div class="form-actions">
          <Button type="submit" variant="primary" busy={action.busy}>
            Log in
          </Button>
        </div>
        <ActionStatus state={action} />
      </form>
      {registrationOpen ? (
        <p class="muted">
          No account yet? <Link href="/register">Register</Link>; an admin approves new accounts.
        </p>
      ) : (
        <p class="muted">Accounts are made by an admin of this cluster.</p>
      )}
    </section>
  )
}
