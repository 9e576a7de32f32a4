// Admin: cluster settings. Self-registration (new accounts wait for
// approval) and the public port range port mappings come from.

import { useEffect, useState } from 'preact/hooks'
import { api } from '../api.ts'
import {
  ActionStatus,
  Button,
  Checkbox,
  Loading,
  Notice,
  PageHeader,
  TextField,
  useAction,
  useLoad,
  wholeNumber,
} from '../components.tsx'
import { Link } from '../router.tsx'
import type { Settings } from '../types.ts'

export function AdminSettingsPage() {
  const settings = useLoad(() => api.settings(), [])
  return (
    <>
      <PageHeader title="Settings" subtitle="Settings of the whole cluster; every node applies them." />
      {settings.error === null ? null : <Notice kind="error">{settings.error}</Notice>}
      {settings.data === null ? (
        settings.error === null ? (
          <Loading what="the settings" />
        ) : null
      ) : (
        <>
          <Registration settings={settings.data} onChange={settings.reload} />
          <PortRange settings={settings.data} onChange={settings.reload} />
        </>
      )}
    </>
  )
}

function Registration({ settings, onChange }: { settings: Settings; onChange: () => Promise<void> }) {
  const [action, run] = useAction()
  // The switch moves at once; it moves back if the node refuses.
  const [open, setOpen] = useState(settings.registration.open)
  useEffect(() => setOpen(settings.registration.open), [settings.registration.open])
  const toggle = (wanted: boolean) => {
    setOpen(wanted)
    return run(wanted ? 'Opening self-registration…' : 'Closing self-registration…', async () => {
      try {
        await api.setRegistration(wanted)
      } catch (error) {
        setOpen(!wanted)
        throw error
      }
      await onChange()
      return wanted
        ? 'Self-registration is open: the login page offers it; new accounts wait for approval.'
        : 'Self-registration is closed.'
    })
  }
  return (
    <section class="card" aria-labelledby="registration-heading">
      <h2 id="registration-heading">Self-registration</h2>
      <p class="muted">
        While it is open, anyone who reaches the portal can register; the account waits until an admin
        approves it on the <Link href="/admin/users">Users</Link> page.
      </p>
      <Checkbox
        label="Open self-registration"
        switchRole
        checked={open}
        onChecked={(value) => void toggle(value)}
      />
      <ActionStatus state={action} />
    </section>
  )
}

function PortRange({ settings, onChange }: { settings: Settings; onChange: () => Promise<void> }) {
  const [min, setMin] = useState(String(settings.ports.min))
  const [max, setMax] = useState(String(settings.ports.max))
  const [checked, setChecked] = useState(false)
  const [action, run] = useAction()
  useEffect(() => {
    setMin(String(settings.ports.min))
    setMax(String(settings.ports.max))
  }, [settings.ports.min, settings.ports.max])

  const low = wholeNumber(min)
  const high = wholeNumber(max)
  const minError = low === null || low < 1 || low > 65_535 ? 'Use a port from 1 to 65535.' : null
  let maxError = high === null || high < 1 || high > 65_535 ? 'Use a port from 1 to 65535.' : null
  if (maxError === null && low !== null && high !== null && high < low)
    maxError = 'The last port comes after the first.'

  const submit = (event: Event) => {
    event.preventDefault()
    setChecked(true)
    if (minError !== null || maxError !== null || low === null || high === null) return
    void run('Saving the port range…', async () => {
      await api.setPortRange(low, high)
      setChecked(false)
      await onChange()
      return `New port mappings get a public port from ${low} to ${high}; existing ones keep theirs.`
    })
  }
  return (
    <section class="card" aria-labelledby="ports-heading">
      <h2 id="ports-heading">Public port range</h2>
      <p class="muted">Port mappings open a port of this range on every node.</p>
      <form class="inline-form" onSubmit={submit} noValidate>
        <TextField
          label="First port"
          type="number"
          inputMode="numeric"
          min={1}
          max={65_535}
          value={min}
          onValue={setMin}
          error={checked ? minError : null}
        />
        <TextField
          label="Last port"
          type="number"
          inputMode="numeric"
          min={1}
          max={65_535}
          value={max}
          onValue={setMax}
          error={checked ? maxError : null}
        />
        <div class="form-actions">
          <Button type="submit" variant="secondary" busy={action.busy}>
            Save port range
          </Button>
        </div>
      </form>
      <ActionStatus state={action} />
    </section>
  )
}
