// Create a vcluster: a name, an image, how many vnodes and what each gets.
// The form checks everything the node would refuse that it can know (name
// rule, whole numbers, the quota left) before it sends anything; what only
// the node knows (host capacity, a name taken meanwhile) comes back as the
// node's sentence under the button.

import { useRef, useState } from 'preact/hooks'
import { api } from '../api.ts'
import { useApp } from '../app-context.ts'
import {
  ActionStatus,
  Button,
  Loading,
  Notice,
  PageHeader,
  SelectField,
  TextField,
  useAction,
  useLoad,
  wholeNumber,
} from '../components.tsx'
import { Link, navigate } from '../router.tsx'
import { type Image, namePattern, nameRule, type Quota, type Session } from '../types.ts'

/** The node's defaults per vnode (src/api/routes-vclusters.ts). */
const defaults = { nodes: '1', cpuCores: '1', memoryMb: '500', diskMb: '500' }

interface Form {
  name: string
  image: string
  nodes: string
  cpuCores: string
  memoryMb: string
  diskMb: string
}

type Errors = Partial<Record<keyof Form, string>>

function left(session: Session, key: keyof Quota): number {
  return Math.max(0, session.quota[key] - session.usage[key])
}

/** Field errors, including the quota each total would exceed. */
export function validate(form: Form, session: Session, images: Image[]): Errors {
  const errors: Errors = {}
  if (!namePattern.test(form.name.trim())) errors.name = `Use ${nameRule}.`
  if (form.image === '' || !images.some((image) => image.id === form.image))
    errors.image = 'Pick an image; an admin builds the first ones on the Images page.'
  const nodes = wholeNumber(form.nodes)
  if (nodes === null || nodes < 1) errors.nodes = 'Use a whole number of 1 or more.'
  else if (nodes > left(session, 'vnodes'))
    errors.nodes = `You have ${left(session, 'vnodes')} of ${session.quota.vnodes} vnodes left.`
  const each: Array<['cpuCores' | 'memoryMb' | 'diskMb', string]> = [
    ['cpuCores', 'cores'],
    ['memoryMb', 'MB'],
    ['diskMb', 'MB'],
  ]
  for (const [key, unit] of each) {
    const value = wholeNumber(form[key])
    if (value === null || value < 1) {
      errors[key] = 'Use a whole number of 1 or more.'
      continue
    }
    if (nodes === null || nodes < 1) continue
    const total = value * nodes
    if (total > left(session, key))
      errors[key] =
        `${nodes} × ${value} = ${total} ${unit}, but you have ${left(session, key)} of ${session.quota[key]} ${unit} left.`
  }
  return errors
}

export function CreateVclusterPage() {
  const { session, refreshSession } = useApp()
  const images = useLoad(() => api.images().then((answer) => answer.images), [])
  const [form, setForm] = useState<Form>({ name: '', image: '', ...defaults })
  const [checked, setChecked] = useState(false)
  const [action, run] = useAction()
  const formRef = useRef<HTMLFormElement>(null)
  const set = (key: keyof Form) => (value: string) => setForm((current) => ({ ...current, [key]: value }))

  const imageList = images.data ?? []
  // Until the user picks one, the first image (busybox or the Debian one) is chosen.
  const chosenImage = form.image !== '' ? form.image : (imageList[0]?.id ?? '')
  const current = { ...form, image: chosenImage }
  const errors = validate(current, session, imageList)
  const shown = (key: keyof Form) => (checked ? (errors[key] ?? null) : null)
  const noVclustersLeft = left(session, 'vclusters') === 0

  const submit = (event: Event) => {
    event.preventDefault()
    setChecked(true)
    if (Object.keys(errors).length > 0) {
      // Once the errors are rendered, move to the first field that needs fixing.
      requestAnimationFrame(() =>
        formRef.current?.querySelector<HTMLElement>('[aria-invalid="true"]')?.focus(),
      )
      return
    }
    const name = current.name.trim()
    void run(`Creating ${name}…`, async () => {
      await api.createVcluster({
        name,
        image: current.image,
        nodes: Number(current.nodes),
        cpuCores: Number(current.cpuCores),
        memoryMb: Number(current.memoryMb),
        diskMb: Number(current.diskMb),
      })
      await refreshSession()
      navigate(`/vclusters/${encodeURIComponent(name)}`)
    })
  }

  return (
    <>
      <PageHeader title="New vcluster" subtitle="Linux containers (vnodes) on one private network." />
      {noVclustersLeft ? (
        <Notice kind="error">
          You use all {session.quota.vclusters} vclusters of your quota; delete one first, or ask an admin for
          a larger quota.
        </Notice>
      ) : null}
      <section class="card">
        {images.error === null ? null : <Notice kind="error">{images.error}</Notice>}
        {images.loading && images.data === null ? (
          <Loading what="the images" />
        ) : (
          <form onSubmit={submit} class="stack" noValidate ref={formRef}>
            <TextField
              label="Name"
              value={form.name}
              onValue={set('name')}
              hint={`Use ${nameRule}. The workspace will be at /go/${session.name}/<name>/.`}
              error={shown('name')}
              required
              autoCapitalize="none"
              spellcheck={false}
            />
            <SelectField
              label="Image"
              value={chosenImage}
              onValue={set('image')}
              options={imageList.map((image) => ({
                value: image.id,
                label: `${image.name} (${image.owner === session.name ? 'mine' : image.owner}${
                  image.visibility === 'public' ? ', public' : ''
                })`,
              }))}
              hint={
                imageList.length === 0 ? 'There are no images yet.' : 'Every vnode starts from this image.'
              }
              error={shown('image')}
            />
            <div class="field-row">
              <TextField
                label="Vnodes"
                type="number"
                inputMode="numeric"
                min={1}
                value={form.nodes}
                onValue={set('nodes')}
                hint={`${left(session, 'vnodes')} left`}
                error={shown('nodes')}
              />
              <TextField
                label="CPU cores per vnode"
                type="number"
                inputMode="numeric"
                min={1}
                value={form.cpuCores}
                onValue={set('cpuCores')}
                hint={`${left(session, 'cpuCores')} left`}
                error={shown('cpuCores')}
              />
              <TextField
                label="Memory per vnode (MB)"
                type="number"
                inputMode="numeric"
                min={1}
                value={form.memoryMb}
                onValue={set('memoryMb')}
                hint={`${left(session, 'memoryMb')} MB left`}
                error={shown('memoryMb')}
              />
              <TextField
                label="Disk per vnode (MB)"
                type="number"
                inputMode="numeric"
                min={1}
                value={form.diskMb}
                onValue={set('diskMb')}
                hint={`${left(session, 'diskMb')} MB left`}
                error={shown('diskMb')}
              />
            </div>
            {checked && Object.keys(errors).length > 0 ? (
              <p class="field-error" role="alert">
                Fix the {Object.keys(errors).length === 1 ? 'field' : 'fields'} marked above; nothing was
                sent.
              </p>
            ) : null}
            <div class="form-actions">
              <Button type="submit" variant="primary" busy={action.busy} disabled={noVclustersLeft}>
                Create vcluster
              </Button>
              <Link href="/" class="button button-quiet">
                Cancel
              </Link>
            </div>
            <ActionStatus state={action} />
          </form>
        )}
      </section>
    </>
  )
}
