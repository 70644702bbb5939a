// IAM on the cloud's endpoint: GetUser, which tools call after GetCallerIdentity (or instead of
// it, older Terraform providers) to name the caller. A caller may always read itself; another
// user of its account needs the account's own key or `iam:GetUser` in its policy.
import { isActionAllowed } from '../../auth/policy.ts';
import { QueryError } from './query-protocol.ts';
import { callerArn, callerUserId, userArn, type IdentityOperation, type IdentityRequest } from './sts.ts';

const USER_PATH = '/';

async function GetUser(req: IdentityRequest, input: Record<string, string>): Promise<Record<string, unknown>> {
  const { caller, store } = req;
  const name = input.UserName;
  if (name === undefined || name === '' || name === caller.userName) {
    const self = await store.db.selectFrom('users').select(['id', 'name', 'created_at']).where('id', '=', caller.userId).executeTakeFirst();
    if (!self) throw new QueryError('NoSuchEntity', `The user with name ${caller.userName} cannot be found.`, 404);
    // The account's own key stands for its root: Arn and UserId name the root, as GetCallerIdentity does.
    return { User: { Path: USER_PATH, UserName: self.name, UserId: callerUserId(caller), Arn: callerArn(caller), CreateDate: new Date(self.created_at) } };
  }
  const allowed = caller.isAdmin || caller.policy === undefined || isActionAllowed(caller.policy, 'iam:GetUser');
  if (!allowed) {
    throw new QueryError('AccessDenied',
      `User: ${callerArn(caller)} is not authorized to perform: iam:GetUser on resource: ${userArn(caller.accountId, name)}`, 403);
  }
  const user = await store.db.selectFrom('users').select(['id', 'name', 'created_at'])
    .where('account_id', '=', caller.accountId).where('name', '=', name).executeTakeFirst();
  if (!user) throw new QueryError('NoSuchEntity', `The user with name ${name} cannot be found.`, 404);
  return { User: { Path: USER_PATH, UserName: user.name, UserId: user.id, Arn: userArn(caller.accountId, user.name), CreateDate: new Date(user.created_at) } };
}

export const iamOperations: Record<string, IdentityOperation> = { GetUser };
