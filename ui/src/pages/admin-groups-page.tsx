// Admin: groups and their quotas (what each member may use). Lowering a
// quota keeps what members already hold.

import { useState } from 'preact/hooks'
import { api } from '../api.ts'
import {
  ActionStatus,
  Button,
  Loading,
  Notice,
  PageHeader,
  TextField,
  useAction,
  useLoad,
  wholeNumber,
} from '../components.tsx'
import { type Group, namePattern, nameRule, type Quota, quotaKeys, quotaLabels } from '../types.ts'

type QuotaText = Record<keyof Quota, string>

function quotaText(quota: Quota | null): QuotaText {
  return Object.fromEntries(
    quotaKeys.map((key) => [key, quota === null ? '' : String(quota[key])]),
  ) as QuotaText
}

/** The quota values that were filled in, or the key of the first one that is not a whole number. */
function parseQuota(text: QuotaText): { quota: Partial<Quota> } | { bad: keyof Quota } {
  const quota: Partial<Quota> = {}
  for (const key of quotaKeys) {
    if (text[key].trim() === '') continue
    const value = wholeNumber(text[key])
    if (value === null) return { bad: key }
    quota[key] = value
  }
  return { quota }
}

function label(key: keyof Quota): string {
  const { name, unit } = quotaLabels[key]
  return unit === '' ? name : `${name} (${unit})`
}

export function AdminGroupsPage() {
  const groups = useLoad(() => api.groups().then((answer) => answer.groups), [])
  return (
    <>
      <PageHeader
        title="Groups"
        subtitle="Every user belongs to one group; its quota applies to each member."
      />
      {groups.error === null ? null : <Notice kind="error">{groups.error}</Notice>}
      {groups.data === null ? (
        groups.error === null ? (
          <Loading what="the groups" />
        ) : null
      ) : (
        groups.data.map((group) => <GroupCard key={group.name} group={group} onChange={groups.reload} />)
      )}
      <AddGroup onAdded={groups.reload} />
    </>
  )
}

function QuotaFields({
  text,
  setText,
  bad,
  blankHint,
}: {
  text: QuotaText
  setText: (text: QuotaText) => void
  bad: keyof Quota | null
  blankHint?: string
}) {
  return (
    <div class="field-row quota-fields">
      {quotaKeys.map((key) => (
        <TextField
          key={key}
          label={label(key)}
          type="number"
          inputMode="numeric"
          min={0}
          value={text[key]}
          onValue={(value) => setText({ ...text, [key]: value })}
          error={bad === key ? 'Use a whole number of 0 or more.' : null}
          placeholder={blankHint}
        />
      ))}
    </div>
  )
}

function GroupCard({ group, onChange }: { group: Group; onChange: () => Promise<void> }) {
  const [text, setText] = useState(quotaText(group.quota))
  const [bad, setBad] = useState<keyof Quota | null>(null)
  const [action, run] = useAction()
  const submit = (event: Event) => {
    event.preventDefault()
    const parsed = parseQuota(text)
    if ('bad' in parsed) {
      setBad(parsed.bad)
      return
    }
    setBad(null)
    const changed = Object.fromEntries(
      Object.entries(parsed.quota).filter(([key, value]) => group.quota[key as keyof Quota] !== value),
    ) as Partial<Quota>
    if (Object.keys(changed).length === 0) return
    void run(`Saving the quota of ${group.name}…`, async () => {
      const saved = await api.setGroupQuota(group.name, changed)
      setText(quotaText(saved.quota))
      await onChange()
      return `Saved the quota of ${group.name}.`
    })
  }
  return (
    <section class="card" aria-labelledby={`group-${group.name}`}>
      <h2 id={`group-${group.name}`}>
        {group.name}{' '}
        <span class="muted small">
          {group.members} {group.members === 1 ? 'member' : 'members'}
        </span>
      </h2>
      <form onSubmit={submit} noValidate aria-label={`Quota of ${group.name}`}>
        <QuotaFields text={text} setText={setText} bad={bad} />
        <div class="form-actions">
          <Button type="submit" variant="secondary" busy={action.busy}>
            Save quota<span class="sr-only"> of {group.name}</span>
          </Button>
        </div>
      </form>
      <ActionStatus state={action} />
    </section>
  )
}

function AddGroup({ onAdded }: { onAdded: () => Promise<void> }) {
  const [name, setName] = useState('')
  const [text, setText] = useState(quotaText(null))
  const [bad, setBad] = useState<keyof Quota | null>(null)
  const [checked, setChecked] = useState(false)
  const [action, run] = useAction()
  const nameError = namePattern.test(name.trim()) ? null : `Use ${nameRule}.`
  const submit = (event: Event) => {
    event.preventDefault()
    setChecked(true)
    const parsed = parseQuota(text)
    setBad('bad' in parsed ? parsed.bad : null)
    if (nameError !== null || 'bad' in parsed) return
    const group = name.trim()
    void run(`Adding the group ${group}…`, async () => {
      await api.addGroup(group, parsed.quota)
      setName('')
      setText(quotaText(null))
      setChecked(false)
      await onAdded()
      return `Added the group ${group}.`
    })
  }
  return (
    <section class="card" aria-labelledby="add-group-heading">
      <h2 id="add-group-heading">Add a group</h2>
      <form onSubmit={submit} noValidate class="stack">
        <TextField
          label="Group name"
          value={name}
          onValue={setName}
          error={checked ? nameError : null}
          autoCapitalize="none"
          spellcheck={false}
        />
        <p class="muted">Leave a quota empty for the default.</p>
        <QuotaFields text={text} setText={setText} bad={bad} blankHint="default" />
        <div class="form-actions">
          <Button type="submit" variant="primary" busy={action.busy}>
            Add group
          </Button>
        </div>
      </form>
      <ActionStatus state={action} />
    </section>
  )
}
